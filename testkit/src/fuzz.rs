//! Inputs for property tests of the parsers that face the outside: the list grammar, agent
//! frames, Celery envelopes and events, cursors.
//!
//! Uniformly random JSON fails at a parser's first key and never reaches its depths, so
//! [`json_with`] mixes a vocabulary of the keys and values the parser knows with arbitrary
//! ones and with numbers at the edges of their types. [`config`] reads the case count from
//! `PROPTEST_CASES`: a few hundred in the test suite, 100,000 in the soak command the README
//! names.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Number, Value};

/// A runner configuration with `PROPTEST_CASES` cases, or `default` when it is not set.
pub fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        // Failures are reported with the minimal input; no persistence files in the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Numbers where parsers go wrong: zero, signs, the ends of i64 and u64, fractions, huge
/// exponents.
fn edge_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(i64::MIN)),
        Just(Value::from(i64::MAX)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(0)),
        Just(Value::from(-1)),
        any::<f64>()
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(Value::Number),
        Just(Value::Number(Number::from_f64(1e300).expect("finite"))),
    ]
}

/// Text: a word of the vocabulary, arbitrary Unicode (NUL and controls included), or a time.
fn text(vocabulary: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(vocabulary).prop_map(str::to_owned),
        2 => any::<String>(),
        1 => Just("2026-12-03T10:00:00Z".to_owned()),
        1 => Just("\u{0}".to_owned()),
    ]
}

/// JSON nested up to `depth` levels whose keys and strings are often from `vocabulary`.
pub fn json_with(vocabulary: &'static [&'static str], depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        edge_number(),
        text(vocabulary).prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((text(vocabulary), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
    .boxed()
}

/// Bytes: arbitrary, or the text of JSON from [`json_with`] (so both the byte level and the
/// structure are reached), sometimes cut short.
pub fn bytes_with(vocabulary: &'static [&'static str], depth: u32) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        json_with(vocabulary, depth).prop_map(|v| v.to_string().into_bytes()),
        (json_with(vocabulary, depth), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = v.to_string().into_bytes();
            let at = cut.index(text.len() + 1);
            text[..at].to_vec()
        }),
    ]
    .boxed()
}
