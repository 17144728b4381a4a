//! Shared pieces of auditsink's benchmarks and of the differential test:
//! the corpus files, and vrl's `parse_cef` run the way Vector users run it (a
//! compiled VRL program over an event whose `.message` is the line).

use std::collections::BTreeMap;
use std::path::PathBuf;

use vrl::compiler::{state::RuntimeState, Context, Program, TargetValue, TimeZone};
use vrl::value::{Secrets, Value};

/// `../../shared/corpus`, resolved from this package's directory.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
}

/// The non-blank lines of a corpus file (as [`auditsink_parser::lines`]
/// splits a batch), or `None` with a "skipping" note when it is missing.
pub fn corpus_lines(name: &str) -> Option<Vec<Vec<u8>>> {
    let path = corpus_dir().join(name);
    match std::fs::read(&path) {
        Ok(body) => Some(auditsink_parser::lines(&body).map(<[u8]>::to_vec).collect()),
        Err(error) => {
            eprintln!("skipping {name}: {}: {error}", path.display());
            None
        }
    }
}

/// A compiled VRL program, run over `{"message": <line>}`.
pub struct Vrl {
    program: Program,
    state: RuntimeState,
    timezone: TimeZone,
}

impl Vrl {
    /// `. = parse_cef!(.message)`: what a Vector `remap` transform runs.
    pub fn parse_cef() -> Vrl {
        Vrl::compile(". = parse_cef!(.message)")
    }

    /// `. = parse_cef!(.message, strict: false)`: vrl's best-effort mode,
    /// which accepts unescaped `=` inside values.
    pub fn parse_cef_lenient() -> Vrl {
        Vrl::compile(". = parse_cef!(.message, strict: false)")
    }

    /// `. = parse_json!(.message)`: the JSON counterpart.
    pub fn parse_json() -> Vrl {
        Vrl::compile(". = parse_json!(.message)")
    }

    /// Compiles `source` with vrl's standard library.
    ///
    /// # Panics
    ///
    /// When the program does not compile (a bug in this file).
    pub fn compile(source: &str) -> Vrl {
        let functions = vrl::stdlib::all();
        let compiled = vrl::compiler::compile(source, &functions)
            .unwrap_or_else(|diagnostics| panic!("{source}: {diagnostics:?}"));
        Vrl {
            program: compiled.program,
            state: RuntimeState::default(),
            timezone: TimeZone::default(),
        }
    }

    /// Runs the program on one line; the event afterwards (`.`), or the
    /// runtime error's text.
    pub fn run(&mut self, line: &[u8]) -> Result<Value, String> {
        let mut event = BTreeMap::new();
        event.insert(
            "message".into(),
            Value::Bytes(vrl::prelude::Bytes::copy_from_slice(line)),
        );
        let mut target = TargetValue {
            value: Value::Object(event),
            metadata: Value::Object(BTreeMap::new()),
            secrets: Secrets::default(),
        };
        self.state.clear();
        let mut context = Context::new(&mut target, &mut self.state, &self.timezone);
        self.program
            .resolve(&mut context)
            .map_err(|error| error.to_string())?;
        Ok(target.value)
    }

    /// Runs the program and returns the resulting object as string pairs
    /// (what `parse_cef` produces: every value is a string).
    pub fn run_to_strings(&mut self, line: &[u8]) -> Result<BTreeMap<String, String>, String> {
        match self.run(line)? {
            Value::Object(object) => Ok(object
                .into_iter()
                .map(|(key, value)| {
                    let text = match value {
                        Value::Bytes(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                        Value::String(text) => (*text).to_owned(),
                        other => other.to_string(),
                    };
                    (key.to_string(), text)
                })
                .collect()),
            other => Err(format!("not an object: {other}")),
        }
    }
}
