//! The schema of pretraining lines: `{"text": ..}`, any other keys allowed. The whole object is
//! hashed in Python's canonical form with sorted keys.

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};

use super::ctx::{Code, Ctx, drain_seq, scalars_are_wrong_type};
use super::pyjson::{Leaf, transcode_map};

/// A whole pretraining line, hashed like Python's `json.dumps(row, sort_keys=True)`: the whole
/// object, keys sorted at every level. (Hugging Face `datasets`' dedup hashes its Arrow rows,
/// which also carry null for columns absent from this line; files with one key set per line
/// hash identically.)
pub(super) struct PretrainLine<'c>(pub(super) &'c mut Ctx);

impl PretrainLine<'_> {
    fn wrong_type(self, kind: &str) {
        self.0.problem(Code::NotAnObject, String::new, || {
            format!("each line must be a JSON object, got {kind}")
        });
    }
}

impl<'de> Visitor<'de> for PretrainLine<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    scalars_are_wrong_type!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        drain_seq(seq)?;
        self.wrong_type("array");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let ctx = self.0;
        let mut watch = [("text", None)];
        transcode_map(ctx, map, true, &mut watch)?;
        let [(_, text)] = watch;
        check_text(ctx, text);
        Ok(())
    }
}

fn check_text(ctx: &mut Ctx, text: Option<Leaf>) {
    let param = || "text".to_string();
    match text {
        None => ctx.problem(Code::MissingText, param, || "missing \"text\" field".into()),
        Some(Leaf::Str(s)) if s.trim().is_empty() => ctx.problem(Code::EmptyText, param, || {
            "\"text\" is empty or whitespace only".into()
        }),
        Some(Leaf::Str(s)) => ctx.chars = ctx.char_count(&s),
        Some(other) => ctx.problem(Code::InvalidText, param, || {
            format!("\"text\" must be a string, got {}", other.kind())
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::datasets::stats::Summary;
    use crate::datasets::validate::Purpose;
    use crate::datasets::validate::tests::{A, U, chat, errs, run};

    #[test]
    fn pretrain_lines() {
        let data = concat!(
            "{\"text\": \"hello world\"}\n",
            "{\"text\": \"\"}\n",
            "{\"text\": \" \\n\\t \"}\n",
            "{\"text\": 5}\n",
            "{\"body\": \"x\"}\n",
            "\"text\"\n",
            "{\"meta\": {\"b\": 1, \"a\": 2}, \"text\": \"héllo\"}\n",
            "{\"text\": \"hello world\"}\n",
            "{\"text\": \"hello world\", \"id\": 1}\n",
        );
        let r = run(Purpose::Pretrain, data.as_bytes());
        assert_eq!(
            errs(&r),
            vec![
                (2, "empty_text", "text"),
                (3, "empty_text", "text"),
                (4, "invalid_text", "text"),
                (5, "missing_text", "text"),
                (6, "not_an_object", ""),
            ]
        );
        assert_eq!((r.valid_examples, r.duplicates), (4, 1));
        assert_eq!(r.stats.messages_per_example, Summary::default());
        assert_eq!(r.stats.chars_per_example.min, 5);
        assert_eq!(r.stats.chars_per_example.max, 11);
        assert!(r.stats.role_counts.is_empty());
        // A chat line is not a pretraining example, and vice versa.
        assert_eq!(
            run(Purpose::Pretrain, chat(&[U, A]).as_bytes()).errors[1].code,
            "missing_text"
        );
    }
}
