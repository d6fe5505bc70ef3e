//! A message's AMQP headers as plain JSON, so that code outside the broker reads them
//! (and stores them) without knowing AMQP's field types.

use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value};

/// A message's headers: text as strings, integers, floats, booleans and timestamps as
/// numbers (or booleans), nested tables as objects, arrays as arrays; anything else
/// (byte arrays, decimals, void) as `null`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers(Map<String, Value>);

impl Headers {
    /// The header `name` when it is text.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// The header `name`, whatever its type.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// The headers as one JSON object, for the record.
    pub fn to_json(&self) -> Value {
        Value::Object(self.0.clone())
    }
}

impl From<Map<String, Value>> for Headers {
    fn from(map: Map<String, Value>) -> Self {
        Self(map)
    }
}

impl From<&FieldTable> for Headers {
    fn from(table: &FieldTable) -> Self {
        Self(table_to_map(table))
    }
}

fn table_to_map(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), value_to_json(v)))
        .collect()
}

fn value_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::from(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(n) => Value::from(*n),
        AMQPValue::Double(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::FieldTable(t) => Value::Object(table_to_map(t)),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};
    use serde_json::json;

    #[test]
    fn amqp_headers_become_json_and_text_is_readable() {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(3));
        let mut table = FieldTable::default();
        table.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString(LongString::from(b"delivery_limit".to_vec())),
        );
        table.insert(
            "short".into(),
            AMQPValue::ShortString(ShortString::from("s")),
        );
        table.insert("flag".into(), AMQPValue::Boolean(true));
        table.insert("n".into(), AMQPValue::LongInt(-7));
        table.insert("death".into(), AMQPValue::FieldTable(death.clone()));
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        table.insert("bytes".into(), AMQPValue::ByteArray(vec![1, 2].into()));

        let headers = Headers::from(&table);

        assert_eq!(headers.text("x-first-death-reason"), Some("delivery_limit"));
        assert_eq!(headers.text("short"), Some("s"));
        assert_eq!(headers.text("n"), None, "a number is not text");
        assert_eq!(headers.text("missing"), None);
        assert_eq!(
            headers.to_json(),
            json!({
                "x-first-death-reason": "delivery_limit",
                "short": "s",
                "flag": true,
                "n": -7,
                "death": {"count": 3},
                "x-death": [{"count": 3}],
                "bytes": null,
            })
        );
    }
}
