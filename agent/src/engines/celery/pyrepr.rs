//! Reads the Python `repr()` of literal values, as Celery puts task arguments in events
//! (`argsrepr`, `kwargsrepr`): numbers, strings with Python escapes, `True`/`False`/`None`,
//! lists, tuples and dicts with string keys. Anything else — an object's repr, a repr Celery
//! truncated (`...`) — is refused, so a retry never runs with guessed arguments.

use serde_json::{Map, Number, Value};

/// Parses a complete literal repr into JSON (tuples become arrays).
pub fn parse(text: &str) -> Result<Value, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        text,
    };
    let value = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected text at {}: {:?}", p.i, &text[p.i..]));
    }
    Ok(value)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

/// Nesting beyond this is not a plausible task argument.
const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        self.ws();
        match self.peek() {
            None => Err("unexpected end (truncated repr?)".into()),
            Some(b'(') => self.sequence(b')', depth),
            Some(b'[') => self.sequence(b']', depth),
            Some(b'{') => self.dict(depth),
            Some(b'\'' | b'"') => self.string().map(Value::String),
            Some(b'-' | b'+' | b'0'..=b'9') => self.number(),
            Some(_) => self.word(),
        }
    }

    fn sequence(&mut self, close: u8, depth: usize) -> Result<Value, String> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Ok(Value::Array(items));
            }
            items.push(self.value(depth + 1)?);
            if !self.eat(b',') {
                return if self.eat(close) {
                    Ok(Value::Array(items))
                } else {
                    Err(self.unexpected())
                };
            }
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Value, String> {
        self.i += 1;
        let mut map = Map::new();
        loop {
            if self.eat(b'}') {
                return Ok(Value::Object(map));
            }
            self.ws();
            let key = match self.peek() {
                Some(b'\'' | b'"') => self.string()?,
                _ => return Err("only string keys map to JSON".into()),
            };
            if !self.eat(b':') {
                return Err(self.unexpected());
            }
            let value = self.value(depth + 1)?;
            map.insert(key, value);
            if !self.eat(b',') {
                return if self.eat(b'}') {
                    Ok(Value::Object(map))
                } else {
                    Err(self.unexpected())
                };
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = self.s[self.i];
        self.i += 1;
        let mut out = String::new();
        loop {
            let rest = &self.text[self.i..];
            let mut chars = rest.chars();
            let c = chars
                .next()
                .ok_or("unterminated string (truncated repr?)")?;
            self.i += c.len_utf8();
            if c as u32 == u32::from(quote) {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let e = self.text[self.i..]
                .chars()
                .next()
                .ok_or("unterminated escape")?;
            self.i += e.len_utf8();
            let hex = |p: &mut Self, n: usize| -> Result<char, String> {
                let digits = p.text.get(p.i..p.i + n).ok_or("short escape")?;
                p.i += n;
                u32::from_str_radix(digits, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("bad escape \\\\{digits}"))
            };
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                '\\' | '\'' | '"' => out.push(e),
                'x' => out.push(hex(self, 2)?),
                'u' => out.push(hex(self, 4)?),
                'U' => out.push(hex(self, 8)?),
                other => return Err(format!("unsupported escape \\\\{other}")),
            }
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.i;
        while self.i < self.s.len()
            && matches!(
                self.s[self.i],
                b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'_'
            )
        {
            self.i += 1;
        }
        let raw = self.text[start..self.i].replace('_', "");
        if let Ok(n) = raw.parse::<i64>() {
            return Ok(Value::Number(n.into()));
        }
        raw.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("not a number: {raw:?}"))
    }

    fn word(&mut self) -> Result<Value, String> {
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        match &self.text[start..self.i] {
            "True" => Ok(Value::Bool(true)),
            "False" => Ok(Value::Bool(false)),
            "None" => Ok(Value::Null),
            "" => Err(self.unexpected()),
            other => Err(format!("{other} is not a literal")),
        }
    }

    fn unexpected(&self) -> String {
        match self.text.get(self.i..) {
            Some("") | None => "unexpected end (truncated repr?)".into(),
            Some(rest) => format!("unexpected {:?}", rest.chars().next().unwrap_or(' ')),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn literals_parse() {
        assert_eq!(parse("(2, 3)").unwrap(), json!([2, 3]));
        assert_eq!(parse("('boom',)").unwrap(), json!(["boom"]));
        assert_eq!(parse("()").unwrap(), json!([]));
        assert_eq!(parse("{}").unwrap(), json!({}));
        assert_eq!(
            parse(r#"{'subject': 'Gr\xfc\xdfe \u2603', 'n': -1.5, 'ok': True, 'x': None, 'l': [1, (2,)]}"#).unwrap(),
            json!({"subject": "Grüße ☃", "n": -1.5, "ok": true, "x": null, "l": [1, [2]]})
        );
        assert_eq!(
            parse(r#"("it's", 'say "hi"', 'a\\b\n')"#).unwrap(),
            json!(["it's", "say \"hi\"", "a\\b\n"])
        );
        assert_eq!(parse("1_000").unwrap(), json!(1000));
    }

    #[test]
    fn non_literals_and_truncations_are_refused() {
        for bad in [
            "(<object at 0x7f>,)",
            "('aaaa...', ...)",
            "(1, 2",
            "{1: 'int key'}",
            "('unterminated",
            "datetime.datetime(2026, 1, 1)",
            "(1 2)",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
