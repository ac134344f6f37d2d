//! Language identification for the `languages` filter, with the `whatlang` crate: small, pure
//! Rust, no model files, 70 languages by trigram profiles and scripts, fast enough to run on
//! every example of a large file. Codes are ISO 639-1 (`en`) where one exists, 639-3 (`eng`,
//! whatlang's own) accepted too.

use whatlang::Lang;

/// ISO 639-1 codes of whatlang's languages (Mandarin is `zh`, Persian `fa`, Norwegian Bokmål
/// `nb` and also `no`).
const ISO_639_1: &[(&str, Lang)] = &[
    ("eo", Lang::Epo),
    ("en", Lang::Eng),
    ("ru", Lang::Rus),
    ("zh", Lang::Cmn),
    ("es", Lang::Spa),
    ("pt", Lang::Por),
    ("it", Lang::Ita),
    ("bn", Lang::Ben),
    ("fr", Lang::Fra),
    ("de", Lang::Deu),
    ("uk", Lang::Ukr),
    ("ka", Lang::Kat),
    ("ar", Lang::Ara),
    ("hi", Lang::Hin),
    ("ja", Lang::Jpn),
    ("he", Lang::Heb),
    ("yi", Lang::Yid),
    ("pl", Lang::Pol),
    ("am", Lang::Amh),
    ("jv", Lang::Jav),
    ("ko", Lang::Kor),
    ("nb", Lang::Nob),
    ("no", Lang::Nob),
    ("da", Lang::Dan),
    ("sv", Lang::Swe),
    ("fi", Lang::Fin),
    ("tr", Lang::Tur),
    ("nl", Lang::Nld),
    ("hu", Lang::Hun),
    ("cs", Lang::Ces),
    ("el", Lang::Ell),
    ("bg", Lang::Bul),
    ("be", Lang::Bel),
    ("mr", Lang::Mar),
    ("kn", Lang::Kan),
    ("ro", Lang::Ron),
    ("sl", Lang::Slv),
    ("hr", Lang::Hrv),
    ("sr", Lang::Srp),
    ("mk", Lang::Mkd),
    ("lt", Lang::Lit),
    ("lv", Lang::Lav),
    ("et", Lang::Est),
    ("ta", Lang::Tam),
    ("vi", Lang::Vie),
    ("ur", Lang::Urd),
    ("th", Lang::Tha),
    ("gu", Lang::Guj),
    ("uz", Lang::Uzb),
    ("pa", Lang::Pan),
    ("az", Lang::Aze),
    ("id", Lang::Ind),
    ("te", Lang::Tel),
    ("fa", Lang::Pes),
    ("ml", Lang::Mal),
    ("or", Lang::Ori),
    ("my", Lang::Mya),
    ("ne", Lang::Nep),
    ("si", Lang::Sin),
    ("km", Lang::Khm),
    ("tk", Lang::Tuk),
    ("ak", Lang::Aka),
    ("zu", Lang::Zul),
    ("sn", Lang::Sna),
    ("af", Lang::Afr),
    ("la", Lang::Lat),
    ("sk", Lang::Slk),
    ("ca", Lang::Cat),
    ("tl", Lang::Tgl),
    ("hy", Lang::Hye),
    ("cy", Lang::Cym),
];

/// Texts with fewer letters than this are kept whatever their language: too short to tell.
pub const MIN_LETTERS: usize = 20;

/// The language a code names (`en`, `EN`, `eng`), if the detector knows it.
pub fn parse(code: &str) -> Option<Lang> {
    let code = code.trim().to_ascii_lowercase();
    ISO_639_1
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, l)| *l)
        .or_else(|| Lang::from_code(code))
}

/// The code reports use for `lang`: its ISO 639-1 code, else whatlang's 639-3.
pub fn code(lang: Lang) -> &'static str {
    ISO_639_1
        .iter()
        .find(|(_, l)| *l == lang)
        .map_or(lang.code(), |(c, _)| c)
}

/// The language of `text`, or `None` when it is too short to tell (fewer than [`MIN_LETTERS`]
/// letters) or the detector cannot say.
pub fn detect(text: &str) -> Option<Lang> {
    if text
        .chars()
        .filter(|c| c.is_alphabetic())
        .take(MIN_LETTERS)
        .count()
        < MIN_LETTERS
    {
        return None;
    }
    whatlang::detect_lang(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_both_ways() {
        assert_eq!(parse("en"), Some(Lang::Eng));
        assert_eq!(parse("EN"), Some(Lang::Eng));
        assert_eq!(parse("eng"), Some(Lang::Eng));
        assert_eq!(parse("zh"), Some(Lang::Cmn));
        assert_eq!(parse("cmn"), Some(Lang::Cmn));
        assert_eq!(parse("klingon"), None);
        assert_eq!(code(Lang::Deu), "de");
        // Every language whatlang knows has a 639-1 code in the table.
        for l in Lang::all() {
            assert_eq!(parse(code(*l)), Some(*l), "{l:?}");
            assert_eq!(code(*l).len(), 2, "{l:?}");
        }
    }

    #[test]
    fn detects_plain_sentences_and_leaves_short_ones_alone() {
        let cases = [
            (
                "The weather is lovely today and we are going for a long walk in the park.",
                "en",
            ),
            (
                "Das Wetter ist heute sehr schön und wir gehen im Park spazieren.",
                "de",
            ),
            (
                "Il fait très beau aujourd'hui et nous allons nous promener dans le parc.",
                "fr",
            ),
            (
                "今天天气很好，我们要去公园散步，然后一起吃午饭，晚上再看电影。",
                "zh",
            ),
            (
                "Сегодня прекрасная погода, и мы идём гулять в парк с друзьями.",
                "ru",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(detect(text).map(code), Some(want), "{text}");
        }
        assert_eq!(detect("ok thanks"), None);
    }
}
