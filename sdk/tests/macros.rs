//! The `#[task]` and `export_tasks!` expansions, run on the host: calls go
//! through the same `invoke` the component export uses.

use celeriac_sdk::{TaskError, task};
use serde::{Deserialize, Serialize};

#[task]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[task]
fn div(a: f64, b: f64) -> Result<f64, TaskError> {
    if b == 0.0 {
        return Err(TaskError::new("ZeroDivisionError", "division by zero"));
    }
    Ok(a / b)
}

#[task(name = "greeting")]
fn greet(name: &str, greeting: Option<String>) -> String {
    format!("{}, {name}!", greeting.as_deref().unwrap_or("Hello"))
}

#[derive(Debug, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

#[task]
fn flip(p: Point) -> Point {
    Point { x: p.y, y: p.x }
}

#[task]
fn nothing() {}

#[task]
fn lines(points: Vec<Point>) -> usize {
    points.len()
}

#[task]
fn parse(s: String) -> Result<i64, TaskError> {
    Ok(s.trim().parse::<i64>()?)
}

#[task]
fn stringly(fail: bool) -> Result<u8, String> {
    if fail { Err("it failed".to_string()) } else { Ok(1) }
}

#[task]
fn io(_path: String) -> std::io::Result<u8> {
    Err(std::io::Error::other("no filesystem"))
}

mod nested {
    use celeriac_sdk::task;

    #[task]
    pub fn sub(mut x: i64, r#y: i64) -> i64 {
        x -= y;
        x
    }
}

celeriac_sdk::export_tasks!(add, div, greet, flip, nothing, lines, parse, stringly, io, nested::sub);

fn call(name: &str, args: &str, kwargs: &str) -> Result<String, TaskError> {
    use celeriac_sdk::__private::Raised;
    <__CeleriacComponent as celeriac_sdk::__private::Guest>::invoke(name.into(), args.into(), kwargs.into()).map_err(
        |raised| match raised {
            Raised::Exception(e) => TaskError {
                exc_type: e.exc_type,
                exc_module: e.exc_module,
                message: e.message,
                args: e.args.map(|a| a.iter().map(|v| serde_json::from_str(v).unwrap()).collect()),
                traceback: e.traceback,
            },
            Raised::Retry(_) => panic!("unexpected retry"),
        },
    )
}

fn type_error(name: &str, args: &str, kwargs: &str) -> String {
    let e = call(name, args, kwargs).unwrap_err();
    assert_eq!(e.exc_type, "TypeError", "{e:?}");
    e.message
}

#[test]
fn original_functions_stay_callable() {
    assert_eq!(add(2, 3), 5);
    assert_eq!(nested::sub(5, 3), 2);
}

#[test]
fn task_names() {
    let infos = <__CeleriacComponent as celeriac_sdk::__private::Guest>::tasks();
    let names: Vec<String> = infos.into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["add", "div", "greeting", "flip", "nothing", "lines", "parse", "stringly", "io", "sub"]);
}

#[test]
fn results() {
    assert_eq!(call("add", "[4, 4]", "{}").unwrap(), "8");
    assert_eq!(call("add", "[4]", r#"{"y": 5}"#).unwrap(), "9");
    assert_eq!(call("add", "", "").unwrap_err().message, "add() missing 2 required positional arguments: 'x' and 'y'");
    assert_eq!(call("div", "[1, 4]", "{}").unwrap(), "0.25");
    assert_eq!(call("greeting", r#"["Bob"]"#, "{}").unwrap(), r#""Hello, Bob!""#);
    assert_eq!(call("greeting", r#"["Bob"]"#, r#"{"greeting": "Hi"}"#).unwrap(), r#""Hi, Bob!""#);
    assert_eq!(call("flip", r#"[{"x": 1, "y": 2}]"#, "{}").unwrap(), r#"{"x":2,"y":1}"#);
    assert_eq!(call("nothing", "[]", "{}").unwrap(), "null");
    assert_eq!(call("sub", "[5]", r#"{"y": 2}"#).unwrap(), "3");
}

#[test]
fn errors() {
    let e = call("div", "[1, 0]", "{}").unwrap_err();
    assert_eq!(e, TaskError::new("ZeroDivisionError", "division by zero"));
    let e = call("parse", r#"["x"]"#, "{}").unwrap_err();
    assert_eq!((e.exc_type.as_str(), e.message.as_str()), ("ValueError", "invalid digit found in string"));
    let e = call("stringly", "[true]", "{}").unwrap_err();
    assert_eq!((e.exc_type.as_str(), e.message.as_str()), ("RuntimeError", "it failed"));
    assert_eq!(call("stringly", "[false]", "{}").unwrap(), "1");
    assert_eq!(call("io", r#"["/etc/passwd"]"#, "{}").unwrap_err().exc_type, "OSError");
    let e = call("nope", "[]", "{}").unwrap_err();
    assert_eq!((e.exc_type.as_str(), e.exc_module.as_deref()), ("NotRegistered", Some("celery.exceptions")));
}

#[test]
fn type_errors() {
    assert_eq!(type_error("add", "[1, 2, 3]", "{}"), "add() takes 2 positional arguments but 3 were given");
    assert_eq!(type_error("add", "[1]", "{}"), "add() missing 1 required positional argument: 'y'");
    assert_eq!(type_error("add", "[1, 2]", r#"{"z": 3}"#), "add() got an unexpected keyword argument 'z'");
    assert_eq!(type_error("add", "[1, 2]", r#"{"x": 3}"#), "add() got multiple values for argument 'x'");
    assert_eq!(type_error("add", r#"[1, "a"]"#, "{}"), "add() argument 'y' must be int, not str");
    assert_eq!(type_error("greeting", "[1]", "{}"), "greeting() argument 'name' must be str, not int");
    assert_eq!(
        type_error("greeting", r#"["a", 5]"#, "{}"),
        "greeting() argument 'greeting' must be str or None, not int"
    );
    assert_eq!(
        type_error("flip", r#"[{"x": 1}]"#, "{}"),
        "flip() argument 'p' must be Point, not dict: missing field 'y'"
    );
    assert_eq!(type_error("flip", r#"["p"]"#, "{}"), "flip() argument 'p' must be Point, not str");
    assert_eq!(
        type_error("lines", r#"[[{"x": 1, "y": "2"}]]"#, "{}").split(':').next(),
        Some("lines() argument 'points' must be list[Point], not list")
    );
    assert_eq!(type_error("sub", "[1]", "{}"), "sub() missing 1 required positional argument: 'y'");
    assert_eq!(type_error("add", "{}", "{}"), "add() positional arguments must be a JSON array, not dict {}");
}

#[test]
fn an_integer_that_does_not_fit_the_parameter_is_an_overflow_error() {
    let e = call("add", "[9223372036854775808, 1]", "{}").unwrap_err();
    assert_eq!(
        (e.exc_type.as_str(), e.message.as_str()),
        ("OverflowError", "add() argument 'x': Python int too large to convert to C long")
    );
    let e = call("add", "[1180591620717411303424, 1]", "{}").unwrap_err();
    assert_eq!(e.exc_type, "OverflowError");
}
