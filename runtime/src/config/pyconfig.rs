//! `celeryconfig.py` read as it is: a Python module of literal assignments.
//!
//! Celery users keep their settings in a module that `app.config_from_object('celeryconfig')`
//! imports (Celery's First Steps writes one). A worker that runs no Python reads the
//! same file with a real Python grammar (tree-sitter-python) and accepts only what
//! can be read without running code: `name = literal` where a literal is a string
//! (implicit concatenation and escapes included), a number (a sign and `+ - * /`
//! between numbers included: `60 * 60 * 24`), `True`/`False`, `None`, or a list,
//! tuple, set or dict of literals; plus a module docstring, comments and `pass`.
//! Anything else — imports, names, calls, comprehensions, f-strings — is refused
//! with the file, the line and the reason, never guessed at.
//!
//! The result is the same `toml::Table` a TOML config parses to, so both go
//! through one validation. `None` means "not set" (Celery's default), as it
//! does for Celery's settings.

use std::path::Path;

use tree_sitter::{Node, Parser};

use super::ConfigError;

/// What a value may be, for refusals.
const LITERALS: &str = "only literal values are read (strings, numbers, True, False, None, and lists, tuples, \
                        sets and dicts of them)";

/// Nesting deeper than this is refused (no config needs it; it bounds recursion).
const MAX_DEPTH: usize = 64;

/// Whether `path` names a Python module (`*.py`) rather than a TOML file.
pub fn is_python_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("py"))
}

/// A refusal at one line of the module.
struct Refusal {
    line: usize,
    reason: String,
}

type Read<T> = Result<T, Refusal>;

fn refuse<T>(node: Node<'_>, reason: impl Into<String>) -> Read<T> {
    Err(Refusal { line: node.start_position().row + 1, reason: reason.into() })
}

/// Read the settings a Python config module assigns. `origin` names the file in errors.
pub fn parse(source: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    let mut parser = Parser::new();
    parser
        .set_language(&tree_sitter_python::LANGUAGE.into())
        .map_err(|e| ConfigError::Invalid { origin: origin.into(), message: format!("Python grammar: {e}") })?;
    let tree = parser
        .parse(source, None)
        .ok_or_else(|| ConfigError::Invalid { origin: origin.into(), message: "the Python parser gave up".into() })?;
    let reader = Reader { source: source.as_bytes() };
    reader.module(tree.root_node()).map_err(|r| ConfigError::Python {
        origin: origin.into(),
        line: r.line,
        reason: r.reason,
    })
}

/// The first syntax error under `node`, if any.
fn first_error(node: Node<'_>) -> Option<Node<'_>> {
    if node.is_error() || node.is_missing() {
        return Some(node);
    }
    if !node.has_error() {
        return None;
    }
    let mut cursor = node.walk();
    let children: Vec<Node<'_>> = node.children(&mut cursor).collect();
    children.into_iter().find_map(first_error)
}

/// Named children, comments left out (they are `extra` nodes anywhere in the tree).
fn children(node: Node<'_>) -> Vec<Node<'_>> {
    let mut cursor = node.walk();
    node.named_children(&mut cursor).filter(|c| c.kind() != "comment").collect()
}

struct Reader<'s> {
    source: &'s [u8],
}

impl Reader<'_> {
    fn text(&self, node: Node<'_>) -> Read<&str> {
        match node.utf8_text(self.source) {
            Ok(t) => Ok(t),
            Err(_) => refuse(node, "not valid UTF-8"),
        }
    }

    fn module(&self, root: Node<'_>) -> Read<toml::Table> {
        if let Some(e) = first_error(root) {
            let what = if e.is_missing() { format!("missing {}", e.kind()) } else { "invalid syntax".to_string() };
            let near = self.text(e).unwrap_or("").lines().next().unwrap_or("").trim().to_string();
            let near = if near.is_empty() { String::new() } else { format!(" near {near:?}") };
            return refuse(e, format!("{what}{near}"));
        }
        let mut table = toml::Table::new();
        for (i, stmt) in children(root).into_iter().enumerate() {
            match stmt.kind() {
                "expression_statement" => {
                    let inner = children(stmt);
                    match inner.as_slice() {
                        [one] if one.kind() == "assignment" => self.assignment(*one, &mut table)?,
                        [one] if i == 0 && matches!(one.kind(), "string" | "concatenated_string") => {} // docstring
                        [one] if one.kind() == "augmented_assignment" => {
                            return refuse(*one, "an augmented assignment (`+=` ...): assign a literal value instead");
                        }
                        [one] => return refuse(*one, format!("{} is not an assignment", describe(*one))),
                        _ => return refuse(stmt, "several expressions on one line: assign one name at a time"),
                    }
                }
                "pass_statement" => {}
                "import_statement" | "import_from_statement" | "future_import_statement" => {
                    return refuse(
                        stmt,
                        "an import: Celeriac reads celeryconfig.py without running Python, so only literal \
                         assignments (name = 'value') are allowed",
                    );
                }
                other => {
                    return refuse(
                        stmt,
                        format!(
                            "{}: only literal assignments (name = 'value') are allowed",
                            other.replace('_', " ").trim_end_matches(" statement").to_string() + " statement"
                        ),
                    );
                }
            }
        }
        Ok(table)
    }

    fn assignment(&self, node: Node<'_>, table: &mut toml::Table) -> Read<()> {
        // `a = b = 'x'` nests the second assignment as the right-hand side.
        let mut names = Vec::new();
        let mut current = node;
        let value = loop {
            let Some(left) = current.child_by_field_name("left") else { return refuse(current, "no name assigned") };
            if left.kind() != "identifier" {
                return refuse(left, format!("{} assigned: assign one name at a time", describe(left)));
            }
            names.push(self.text(left)?.to_string());
            match current.child_by_field_name("right") {
                Some(r) if r.kind() == "assignment" => current = r,
                Some(r) => break r,
                None => return refuse(current, "an annotation without a value"),
            }
        };
        let value = self.value(value, 0)?;
        for name in names {
            match &value {
                Some(v) => table.insert(name, v.clone()),
                None => table.remove(&name),
            };
        }
        Ok(())
    }

    /// A literal's value; `None` for Python's `None`.
    fn value(&self, node: Node<'_>, depth: usize) -> Read<Option<toml::Value>> {
        if depth > MAX_DEPTH {
            return refuse(node, format!("nested more than {MAX_DEPTH} levels deep"));
        }
        Ok(Some(match node.kind() {
            "none" => return Ok(None),
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            "string" => toml::Value::String(self.string(node)?),
            "concatenated_string" => {
                let mut s = String::new();
                for part in children(node) {
                    s.push_str(&self.string(part)?);
                }
                toml::Value::String(s)
            }
            "integer" | "float" | "unary_operator" | "binary_operator" => self.number(node)?.into(),
            "parenthesized_expression" => match children(node).as_slice() {
                [inner] => return self.value(*inner, depth + 1),
                _ => return refuse(node, "not a literal"),
            },
            "list" | "tuple" | "set" => {
                let mut items = Vec::new();
                for item in children(node) {
                    match self.value(item, depth + 1)? {
                        Some(v) => items.push(v),
                        None => return refuse(item, "None inside a list or tuple is not supported"),
                    }
                }
                toml::Value::Array(items)
            }
            "dictionary" => {
                let mut t = toml::Table::new();
                for pair in children(node) {
                    if pair.kind() != "pair" {
                        return refuse(pair, format!("{} in a dict: only 'key': literal pairs", describe(pair)));
                    }
                    let (Some(k), Some(v)) = (pair.child_by_field_name("key"), pair.child_by_field_name("value"))
                    else {
                        return refuse(pair, "a dict entry without a key or value");
                    };
                    let key = match self.value(k, depth + 1)? {
                        Some(toml::Value::String(s)) => s,
                        _ => return refuse(k, "a dict key must be a string"),
                    };
                    // `{'rate_limit': None}`: the key is not set, as Celery's None default.
                    if let Some(v) = self.value(v, depth + 1)? {
                        t.insert(key, v);
                    }
                }
                toml::Value::Table(t)
            }
            _ => return refuse(node, format!("{}: {LITERALS}", describe(node))),
        }))
    }

    /// A string literal's value (prefixes `r`, `u`; escapes decoded as Python does).
    fn string(&self, node: Node<'_>) -> Read<String> {
        if node.kind() != "string" {
            return refuse(node, format!("{} is not a literal value", describe(node)));
        }
        let text = self.text(node)?;
        let quote_at = text.find(['\'', '"']).unwrap_or(0);
        let prefix = text[..quote_at].to_ascii_lowercase();
        if prefix.contains('f') || prefix.contains('t') {
            return refuse(node, "an f-string: its value is computed when Python runs it; write the plain string");
        }
        if prefix.contains('b') {
            return refuse(node, "a bytes literal (b'...'): write a str");
        }
        let rest = &text[quote_at..];
        let q = if rest.starts_with("\"\"\"") || rest.starts_with("'''") { 3 } else { 1 };
        if rest.len() < 2 * q {
            return refuse(node, "an unterminated string");
        }
        let body = &rest[q..rest.len() - q];
        if prefix.contains('r') {
            return Ok(body.to_string());
        }
        unescape(body).or_else(|e| refuse(node, e.to_string()))
    }

    /// A number: a literal, a signed literal, or `+ - * /` between numbers.
    fn number(&self, node: Node<'_>) -> Read<Number> {
        match node.kind() {
            "integer" => {
                let t = self.text(node)?.replace('_', "");
                let lower = t.to_ascii_lowercase();
                if lower.ends_with('j') {
                    return refuse(node, "a complex number");
                }
                let parsed = if let Some(h) = lower.strip_prefix("0x") {
                    i64::from_str_radix(h, 16)
                } else if let Some(o) = lower.strip_prefix("0o") {
                    i64::from_str_radix(o, 8)
                } else if let Some(b) = lower.strip_prefix("0b") {
                    i64::from_str_radix(b, 2)
                } else {
                    lower.parse::<i64>()
                };
                parsed.map(Number::Int).or_else(|_| refuse(node, format!("integer {t} is out of range")))
            }
            "float" => {
                let t = self.text(node)?.replace('_', "");
                if t.to_ascii_lowercase().ends_with('j') {
                    return refuse(node, "a complex number");
                }
                t.parse::<f64>().map(Number::Float).or_else(|_| refuse(node, format!("{t} is not a number")))
            }
            "parenthesized_expression" => match children(node).as_slice() {
                [inner] => self.number(*inner),
                _ => refuse(node, "not a number"),
            },
            "unary_operator" => {
                let (Some(op), Some(arg)) =
                    (node.child_by_field_name("operator"), node.child_by_field_name("argument"))
                else {
                    return refuse(node, "not a number");
                };
                let n = self.number(arg)?;
                match self.text(op)? {
                    "+" => Ok(n),
                    "-" => n.neg().map_or_else(|| refuse(node, "integer out of range"), Ok),
                    other => refuse(node, format!("the operator {other} is not allowed in a literal")),
                }
            }
            "binary_operator" => {
                let (Some(l), Some(op), Some(r)) = (
                    node.child_by_field_name("left"),
                    node.child_by_field_name("operator"),
                    node.child_by_field_name("right"),
                ) else {
                    return refuse(node, "not a number");
                };
                let (l, r) = (self.number(l)?, self.number(r)?);
                let op = self.text(op)?;
                match Number::apply(l, op, r) {
                    Some(n) => Ok(n),
                    None => refuse(node, format!("`{op}` between numbers: only + - * / are read, within range")),
                }
            }
            _ => refuse(node, format!("{} is not a number", describe(node))),
        }
    }
}

/// A Python number as TOML holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }

    fn neg(self) -> Option<Number> {
        match self {
            Number::Int(i) => i.checked_neg().map(Number::Int),
            Number::Float(f) => Some(Number::Float(-f)),
        }
    }

    fn apply(l: Number, op: &str, r: Number) -> Option<Number> {
        if let (Number::Int(a), Number::Int(b)) = (l, r) {
            return match op {
                "+" => a.checked_add(b).map(Number::Int),
                "-" => a.checked_sub(b).map(Number::Int),
                "*" => a.checked_mul(b).map(Number::Int),
                "/" if b != 0 => Some(Number::Float(a as f64 / b as f64)),
                _ => None,
            };
        }
        let (a, b) = (l.as_f64(), r.as_f64());
        let v = match op {
            "+" => a + b,
            "-" => a - b,
            "*" => a * b,
            "/" if b != 0.0 => a / b,
            _ => return None,
        };
        v.is_finite().then_some(Number::Float(v))
    }
}

impl From<Number> for toml::Value {
    fn from(n: Number) -> toml::Value {
        match n {
            Number::Int(i) => toml::Value::Integer(i),
            Number::Float(f) => toml::Value::Float(f),
        }
    }
}

/// What a node is, in words, for a refusal.
fn describe(node: Node<'_>) -> String {
    match node.kind() {
        "identifier" => "a name (a variable)".into(),
        "call" => "a function call".into(),
        "attribute" => "an attribute (a.b)".into(),
        "subscript" => "a subscript (a[b])".into(),
        "list_comprehension" | "set_comprehension" | "dictionary_comprehension" | "generator_expression" => {
            "a comprehension".into()
        }
        "lambda" => "a lambda".into(),
        "conditional_expression" => "a conditional expression (x if c else y)".into(),
        "dictionary_splat" | "list_splat" => "an unpacking (* or **)".into(),
        "pattern_list" | "tuple_pattern" | "list_pattern" => "several names".into(),
        other => format!("a {}", other.replace('_', " ")),
    }
}

/// An escape sequence Python would refuse (or that needs a table this reader lacks).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct EscapeError(String);

/// Decode a Python (non-raw) string literal's escapes.
fn unescape(body: &str) -> Result<String, EscapeError> {
    let bad = |what: &str| EscapeError(what.to_string());
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else { return Err(bad("a string ends with a backslash")) };
        match e {
            '\n' => {}
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(v).ok_or_else(|| bad("an invalid octal escape"))?);
            }
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = (0..n).filter_map(|_| chars.next()).collect();
                let v = (hex.len() == n).then(|| u32::from_str_radix(&hex, 16).ok()).flatten();
                match v.and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => return Err(EscapeError(format!("an invalid \\{e} escape"))),
                }
            }
            'N' => return Err(bad("a \\N{...} escape: write the character itself")),
            other => {
                // Python keeps an unknown escape as it is (with a warning).
                out.push('\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(src: &str) -> Result<toml::Table, String> {
        parse(src, "celeryconfig.py").map_err(|e| e.to_string())
    }

    #[test]
    fn the_first_steps_celeryconfig_reads_as_python_would() {
        let t = read(
            "broker_url = 'pyamqp://'\nresult_backend = 'rpc://'\n\ntask_serializer = 'json'\n\
             result_serializer = 'json'\naccept_content = ['json']\ntimezone = 'Europe/Oslo'\nenable_utc = True\n\
             task_routes = {\n    'tasks.add': 'low-priority',\n}\ntask_annotations = {\n    'tasks.add': \
             {'rate_limit': '10/m'}\n}\n",
        )
        .unwrap();
        assert_eq!(t["broker_url"].as_str(), Some("pyamqp://"));
        assert_eq!(t["enable_utc"].as_bool(), Some(true));
        assert_eq!(t["accept_content"].as_array().map(Vec::len), Some(1));
        assert_eq!(t["task_routes"]["tasks.add"].as_str(), Some("low-priority"));
        assert_eq!(t["task_annotations"]["tasks.add"]["rate_limit"].as_str(), Some("10/m"));
    }

    #[test]
    fn literals_read_as_python_reads_them() {
        let t = read(
            "\"\"\"Docstring.\"\"\"\n# a comment\na = -5\nb = 1_000\nc = 0x10\nd = 2.5e1\ne = ('x', 'y')\n\
             f = 'ab' \"cd\"  # implicit concatenation\ng = 'tab\\there\\x41\\u00e9'\nh = r'\\d+'\ni = None\n\
             j = {'k': None, 'l': [1, 2]}\nk = 60 * 60 * 24\nm = n = 'same'\no: int = 3\np = {'x'}\npass\n\
             q = '''multi\nline'''\n",
        )
        .unwrap();
        assert_eq!(t["a"].as_integer(), Some(-5));
        assert_eq!(t["b"].as_integer(), Some(1000));
        assert_eq!(t["c"].as_integer(), Some(16));
        assert_eq!(t["d"].as_float(), Some(25.0));
        assert_eq!(t["e"].as_array().map(Vec::len), Some(2));
        assert_eq!(t["f"].as_str(), Some("abcd"));
        assert_eq!(t["g"].as_str(), Some("tab\thereAé"));
        assert_eq!(t["h"].as_str(), Some("\\d+"));
        assert!(!t.contains_key("i"), "None is 'not set'");
        assert!(!t["j"].as_table().unwrap().contains_key("k"));
        assert_eq!(t["k"].as_integer(), Some(86400));
        assert_eq!((t["m"].as_str(), t["n"].as_str()), (Some("same"), Some("same")));
        assert_eq!(t["o"].as_integer(), Some(3));
        assert_eq!(t["p"].as_array().map(Vec::len), Some(1));
        assert_eq!(t["q"].as_str(), Some("multi\nline"));
    }

    #[test]
    fn anything_but_a_literal_is_refused_with_the_line_and_why() {
        let cases: &[(&str, &str)] = &[
            ("a = 1\nimport os\n", "celeryconfig.py:2: an import"),
            ("from __future__ import annotations\n", "celeryconfig.py:1: an import"),
            ("a = 1\n\nb = os.environ['X']\n", "celeryconfig.py:3: a subscript"),
            ("x = 'a'\nbroker_url = x\n", "celeryconfig.py:2: a name (a variable)"),
            ("task_queues = (Queue('default'),)\n", "celeryconfig.py:1: a function call"),
            ("a = [i for i in range(3)]\n", "celeryconfig.py:1: a comprehension"),
            ("a = f'{1}'\n", "celeryconfig.py:1: an f-string"),
            ("a = b'x'\n", "celeryconfig.py:1: a bytes literal"),
            ("def f():\n    pass\n", "celeryconfig.py:1: function definition statement"),
            ("a = 1\nb = [1,\n", "celeryconfig.py:2:"),
            ("a = 99999999999999999999\n", "out of range"),
            ("a, b = 1, 2\n", "several names"),
            ("a = {1: 'x'}\n", "a dict key must be a string"),
            ("'x'\n'y'\n", "celeryconfig.py:2: a string is not an assignment"),
        ];
        for (src, want) in cases {
            let e = read(src).unwrap_err();
            assert!(e.contains(want), "{src:?}: {e:?} does not contain {want:?}");
        }
    }

    #[test]
    fn python_files_are_told_from_toml_by_extension() {
        assert!(is_python_path(Path::new("celeryconfig.py")));
        assert!(!is_python_path(Path::new("celeriac.toml")));
    }
}
