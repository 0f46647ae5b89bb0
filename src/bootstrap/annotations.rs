//! Keys starting with `$` (`$comment`, `$schema`, …) annotate a catalog
//! file, as in JSON Schema: upstream's `catalog.json` opens with a
//! `$comment`. They are skipped wherever they appear, while every other
//! unknown key is still refused.
//!
//! This is a wrapper around the parser's own deserializer, not a pass over
//! an intermediate value, so that every error is still raised inside the
//! parser and reported at its line and column: a key is read by the
//! parser, and only a key that is not an annotation reaches the seed that
//! would have read it (a field name, a map key).

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, IntoDeserializer, MapAccess,
    SeqAccess, Visitor,
};

/// Whether a map key is an annotation, skipped with its value.
fn is_annotation(key: &str) -> bool {
    key.starts_with('$')
}

/// A deserializer that reads like `D` but skips annotation keys in every
/// map, at any depth. Enum payloads are passed through unwrapped: the
/// catalog's enums are plain strings.
pub(super) struct SkipAnnotations<D>(pub(super) D);

/// Forwards `deserialize_*` methods to the inner deserializer with the
/// visitor wrapped.
macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(
                self,
                $($arg: $ty,)*
                visitor: V,
            ) -> Result<V::Value, D::Error> {
                self.0.$method($($arg,)* Wrap(visitor))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for SkipAnnotations<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(),
        deserialize_i32(), deserialize_i64(), deserialize_i128(), deserialize_u8(),
        deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(),
        deserialize_string(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(), deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str), deserialize_seq(),
        deserialize_tuple(len: usize), deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(), deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(), deserialize_ignored_any(),
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A visitor that hands maps, sequences and nested values on wrapped.
struct Wrap<V>(V);

/// Forwards `visit_*` methods that carry a plain value.
macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.0.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    forward_visit! {
        visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64),
        visit_i128(i128), visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64),
        visit_u128(u128), visit_f32(f32), visit_f64(f64), visit_char(char), visit_str(&str),
        visit_borrowed_str(&'de str), visit_string(String), visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]), visit_byte_buf(Vec<u8>),
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(SkipAnnotations(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(SkipAnnotations(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(Seq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Map(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(data)
    }
}

/// A seed whose value is read through [`SkipAnnotations`].
struct Seed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(SkipAnnotations(d))
    }
}

struct Seq<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct Map<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<A> {
    type Error = A::Error;

    /// Reads keys until one is not an annotation; each annotation's value
    /// is read and dropped.
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut seed = Some(seed);
        loop {
            match self.0.next_key_seed(Key(&mut seed))? {
                None => return Ok(None),
                Some(Some(key)) => return Ok(Some(key)),
                Some(None) => {
                    self.0.next_value::<IgnoredAny>()?;
                }
            }
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Seed(seed))
    }
}

/// Reads one map key as a string: `None` for an annotation, else the
/// value the caller's seed makes of it. The seed is taken only then, so
/// it is still there for the next key after an annotation.
struct Key<'s, K>(&'s mut Option<K>);

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for Key<'_, K> {
    type Value = Option<K::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for Key<'_, K> {
    type Value = Option<K::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if is_annotation(key) {
            return Ok(None);
        }
        let seed = self
            .0
            .take()
            .ok_or_else(|| E::custom("a map key was read twice"))?;
        seed.deserialize(IntoDeserializer::<E>::into_deserializer(key))
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: u32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Vec<Inner>,
        #[serde(default)]
        map: BTreeMap<String, String>,
        #[serde(default)]
        maybe: Option<Inner>,
    }

    fn json(text: &str) -> Result<Outer, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let value = Outer::deserialize(SkipAnnotations(&mut de))?;
        de.end()?;
        Ok(value)
    }

    fn yaml(text: &str) -> Result<Outer, serde_yaml::Error> {
        Outer::deserialize(SkipAnnotations(serde_yaml::Deserializer::from_str(text)))
    }

    #[test]
    fn dollar_keys_are_skipped_at_any_depth() {
        let text = r#"{"$comment": {"any": ["thing"]}, "inner": [{"$x": 1, "a": 2}],
            "map": {"$note": "n", "k": "v"}, "maybe": {"a": 3, "$c": null}}"#;
        let expected = Outer {
            inner: vec![Inner { a: 2 }],
            map: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            maybe: Some(Inner { a: 3 }),
        };
        assert_eq!(json(text).expect("reads"), expected);
        assert_eq!(yaml(text).expect("reads"), expected);
    }

    #[test]
    fn other_unknown_keys_are_still_refused_at_their_line() {
        let err = json("{\"$comment\": \"c\",\n \"inner\": [\n {\"b\": 1}]}").expect_err("refused");
        assert!(err.to_string().contains("unknown field `b`"), "{err}");
        assert_eq!(err.line(), 3);

        let err = yaml("$comment: c\ninner:\n  - a: 1\n    b: 2\n").expect_err("refused");
        assert!(err.to_string().contains("unknown field `b`"), "{err}");
        assert_eq!(err.location().map(|l| l.line()), Some(4));
    }

    #[test]
    fn a_bad_value_after_an_annotation_is_reported_at_its_line() {
        let err = yaml("$comment: c\ninner:\n  - $c: 1\n    a: x\n").expect_err("refused");
        assert_eq!(err.location().map(|l| l.line()), Some(4), "{err}");
    }
}
