//! The schema of a message's `tool_calls`, as OpenAI's fine-tuning validation reads them: an
//! array of calls, each an object with a string `id` (what the tool message answering it gives
//! as `tool_call_id`) and a `function` object whose `name` is a non-empty string and whose
//! `arguments` is a string: the JSON-encoded arguments, as the API sends them (an object is
//! refused). Other keys (`type`, ..) are allowed; null means no calls.
//!
//! The value is written in Python's canonical form while it is checked, like any other value
//! of a message. Its first fault is handed back rather than recorded, and the message check
//! (`chat`) reports it after the role, so a message's problems come in the same order
//! whatever the order of its keys.

use std::fmt;

use serde::de::{self, DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};

use super::ctx::{Code, Ctx};
use super::pyjson::{Leaf, Py, transcode_map, transcode_map_with, watched_value};

/// A message's `tool_calls` as read.
pub(super) struct ToolCalls {
    /// The calls in the array; 0 for null, or for a value that is not an array.
    pub(super) calls: usize,
    /// The first fault, if any.
    pub(super) fault: Option<Fault>,
}

/// What is wrong with a `tool_calls` value. Each names the call's index where it has one, and
/// the JSON kind found (`None`: the field is missing).
pub(super) enum Fault {
    /// `tool_calls` is neither an array nor null.
    NotArray(&'static str),
    /// A call is not an object.
    CallNotObject(usize, &'static str),
    /// A call's `id` is missing or not a string.
    Id(usize, Option<&'static str>),
    /// A call's `function` is missing or not an object.
    Function(usize, Option<&'static str>),
    /// The function's `name` is missing, not a string, or empty (kind `"string"`).
    Name(usize, Option<&'static str>),
    /// The function's `arguments` is missing or not a string.
    Arguments(usize, Option<&'static str>),
}

impl Fault {
    /// Records the fault as the line's problem, for the message at `at` (`messages[1]`).
    pub(super) fn report(&self, ctx: &mut Ctx, at: &str) {
        let call = |j: usize, field: &str| format!("tool_calls[{j}]{field}");
        let (code, param, message) = match *self {
            Fault::NotArray(kind) => (
                Code::InvalidToolCalls,
                "tool_calls".to_string(),
                format!("\"tool_calls\" must be an array of calls, got {kind}"),
            ),
            Fault::CallNotObject(j, kind) => (
                Code::InvalidToolCalls,
                call(j, ""),
                format!("each tool call must be an object, got {kind}"),
            ),
            Fault::Id(j, kind) => (
                Code::InvalidToolCallId,
                call(j, ".id"),
                match kind {
                    None => "missing \"id\": a tool call needs the id its tool message answers \
                             with tool_call_id"
                        .into(),
                    Some(kind) => format!("a tool call's \"id\" must be a string, got {kind}"),
                },
            ),
            Fault::Function(j, kind) => (
                Code::InvalidFunctionName,
                call(j, ".function"),
                match kind {
                    None => "missing \"function\": a tool call names the function it calls \
                             ({\"name\", \"arguments\"})"
                        .into(),
                    Some(kind) => format!(
                        "\"function\" must be an object with \"name\" and \"arguments\", got {kind}"
                    ),
                },
            ),
            Fault::Name(j, kind) => (
                Code::InvalidFunctionName,
                call(j, ".function.name"),
                match kind {
                    None => "missing function \"name\"".into(),
                    Some("string") => "the function \"name\" must not be empty".into(),
                    Some(kind) => format!("the function \"name\" must be a string, got {kind}"),
                },
            ),
            Fault::Arguments(j, kind) => (
                Code::InvalidFunctionArguments,
                call(j, ".function.arguments"),
                format!(
                    "function \"arguments\" must be a string holding the JSON-encoded arguments \
                     (as OpenAI sends them, e.g. \"{{\\\"a\\\": 2}}\"), got {}",
                    kind.unwrap_or("nothing")
                ),
            ),
        };
        ctx.problem(code, || format!("{at}.{param}"), || message);
    }
}

/// The kind of a watched field, `None` when it was missing.
fn kind_of(leaf: &Option<Leaf>) -> Option<&'static str> {
    leaf.as_ref().map(Leaf::kind)
}

/// The scalar kinds a visitor here does not expect: written by [`Py`] all the same, then
/// `$wrong` (which may use `$self`'s other fields and `$leaf`, what `Py` read) is the result.
macro_rules! scalars_via_py {
    ($self:ident, $leaf:ident => $wrong:expr) => {
        fn visit_unit<E: de::Error>($self) -> Result<Self::Value, E> {
            let $leaf = Py { ctx: &mut *$self.ctx, sort: $self.sort }.visit_unit()?;
            Ok($wrong)
        }
        fn visit_bool<E: de::Error>($self, v: bool) -> Result<Self::Value, E> {
            let $leaf = Py { ctx: &mut *$self.ctx, sort: $self.sort }.visit_bool(v)?;
            Ok($wrong)
        }
        fn visit_i64<E: de::Error>($self, v: i64) -> Result<Self::Value, E> {
            let $leaf = Py { ctx: &mut *$self.ctx, sort: $self.sort }.visit_i64(v)?;
            Ok($wrong)
        }
        fn visit_u64<E: de::Error>($self, v: u64) -> Result<Self::Value, E> {
            let $leaf = Py { ctx: &mut *$self.ctx, sort: $self.sort }.visit_u64(v)?;
            Ok($wrong)
        }
        fn visit_f64<E: de::Error>($self, v: f64) -> Result<Self::Value, E> {
            let $leaf = Py { ctx: &mut *$self.ctx, sort: $self.sort }.visit_f64(v)?;
            Ok($wrong)
        }
        fn visit_str<E: de::Error>($self, v: &str) -> Result<Self::Value, E> {
            let $leaf = Py { ctx: &mut *$self.ctx, sort: $self.sort }.visit_str(v)?;
            Ok($wrong)
        }
    };
}

/// Reads a message's `tool_calls` value; `sort` as for the message's other values.
pub(super) struct ToolCallsSeed<'c> {
    pub(super) ctx: &'c mut Ctx,
    pub(super) sort: bool,
}

/// Anything but an array: no calls, and a fault unless it is null.
fn not_array(leaf: &Leaf) -> ToolCalls {
    ToolCalls {
        calls: 0,
        fault: (!matches!(leaf, Leaf::Null)).then(|| Fault::NotArray(leaf.kind())),
    }
}

impl<'de> DeserializeSeed<'de> for ToolCallsSeed<'_> {
    type Value = ToolCalls;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<ToolCalls, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ToolCallsSeed<'_> {
    type Value = ToolCalls;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of tool calls")
    }

    scalars_via_py!(self, leaf => not_array(&leaf));

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ToolCalls, A::Error> {
        let leaf = Py {
            ctx: self.ctx,
            sort: self.sort,
        }
        .visit_map(map)?;
        Ok(not_array(&leaf))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ToolCalls, A::Error> {
        let (ctx, sort) = (self.ctx, self.sort);
        ctx.out.push(b'[');
        let mut calls = 0;
        let mut fault = None;
        loop {
            let sep = ctx.out.len();
            if calls > 0 {
                ctx.out.extend_from_slice(b", ");
            }
            let seed = CallSeed {
                ctx: &mut *ctx,
                sort,
                index: calls,
            };
            let Some(f) = seq.next_element_seed(seed)? else {
                ctx.out.truncate(sep);
                break;
            };
            fault = fault.or(f);
            calls += 1;
        }
        ctx.out.push(b']');
        Ok(ToolCalls { calls, fault })
    }
}

/// One call, `tool_calls[index]`: its fault, if any.
struct CallSeed<'c> {
    ctx: &'c mut Ctx,
    sort: bool,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for CallSeed<'_> {
    type Value = Option<Fault>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<Fault>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CallSeed<'_> {
    type Value = Option<Fault>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tool call object")
    }

    scalars_via_py!(self, leaf => Some(Fault::CallNotObject(self.index, leaf.kind())));

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Fault>, A::Error> {
        let leaf = Py {
            ctx: &mut *self.ctx,
            sort: self.sort,
        }
        .visit_seq(seq)?;
        Ok(Some(Fault::CallNotObject(self.index, leaf.kind())))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Fault>, A::Error> {
        let (sort, index) = (self.sort, self.index);
        let mut id = [("id", None)];
        // `Some(fault)` once the key was read.
        let mut function: Option<Option<Fault>> = None;
        transcode_map_with(self.ctx, map, sort, |ctx, key, map| {
            if key != "function" {
                return watched_value(ctx, key, map, sort, &mut id);
            }
            if function.is_some() {
                return Err(A::Error::custom("duplicate key \"function\""));
            }
            function = Some(map.next_value_seed(FunctionSeed { ctx, sort, index })?);
            Ok(false)
        })?;
        let [(_, id)] = id;
        Ok(match (id, function) {
            (Some(Leaf::Str(_)), Some(fault)) => fault,
            (Some(Leaf::Str(_)), None) => Some(Fault::Function(index, None)),
            (id, _) => Some(Fault::Id(index, kind_of(&id))),
        })
    }
}

/// A call's `function`: its fault, if any.
struct FunctionSeed<'c> {
    ctx: &'c mut Ctx,
    sort: bool,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for FunctionSeed<'_> {
    type Value = Option<Fault>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<Fault>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FunctionSeed<'_> {
    type Value = Option<Fault>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a function object")
    }

    scalars_via_py!(self, leaf => Some(Fault::Function(self.index, Some(leaf.kind()))));

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Fault>, A::Error> {
        let leaf = Py {
            ctx: &mut *self.ctx,
            sort: self.sort,
        }
        .visit_seq(seq)?;
        Ok(Some(Fault::Function(self.index, Some(leaf.kind()))))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Fault>, A::Error> {
        let mut watch = [("name", None), ("arguments", None)];
        transcode_map(self.ctx, map, self.sort, &mut watch)?;
        let [(_, name), (_, arguments)] = watch;
        let j = self.index;
        Ok(match (name, arguments) {
            (Some(Leaf::Str(n)), _) if n.is_empty() => Some(Fault::Name(j, Some("string"))),
            (Some(Leaf::Str(_)), Some(Leaf::Str(_))) => None,
            (Some(Leaf::Str(_)), arguments) => Some(Fault::Arguments(j, kind_of(&arguments))),
            (name, _) => Some(Fault::Name(j, kind_of(&name))),
        })
    }
}
