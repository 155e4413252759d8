//! The client history format that `shmraft torture` writes and the linearizability checker reads.
//!
//! One JSON object per line, one line per operation:
//!
//! ```text
//! {"client":1,"kind":"put","key":"k","value":"v","output":"","call":123,"return":456,"ok":true}
//! ```
//!
//! | field | meaning |
//! |---|---|
//! | `client` | the client that issued the operation (informational) |
//! | `kind` | `put`, `get` or `append` |
//! | `key` | the key (a string) |
//! | `value` | the value written by a put or appended by an append; optional, default `""` (ignored for a get) |
//! | `output` | the value a get returned; optional, default `""` (ignored for put and append) |
//! | `call` | when the client sent the operation, ns from one monotonic clock |
//! | `return` | when the client received the response, same clock; required when `ok` is true, `>= call` |
//! | `ok` | `true`: the operation took effect between `call` and `return` with this output. `false`: the outcome is unknown (timed out): it may have taken effect at any time after `call`, or never; `return` may be absent and is ignored |
//!
//! Operations that definitely failed (the system said they did not take effect) are left out.
//! Every key starts as the empty string. Unknown fields are an error, not ignored, so a typo cannot
//! silently change what is checked. Blank lines are skipped. Errors name the 1-based line number.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// The kind of operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Put,
    Get,
    Append,
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    pub client: u64,
    pub kind: OpKind,
    pub key: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub output: String,
    /// Call time, ns.
    pub call: u64,
    /// Return time, ns; `None` only when `ok` is false.
    #[serde(rename = "return", default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<u64>,
    /// `false`: unknown outcome.
    pub ok: bool,
}

impl Operation {
    /// Checks the rules the JSON schema cannot express.
    pub fn validate(&self) -> Result<(), String> {
        match (self.ok, self.ret) {
            (true, None) => Err("\"return\" is required when \"ok\" is true".to_owned()),
            (true, Some(ret)) if ret < self.call => {
                Err(format!("\"return\" {ret} is before \"call\" {}", self.call))
            }
            _ => Ok(()),
        }
    }

    /// A short human rendering, e.g. `client 3 get "k" -> "v" [10, 20]`.
    pub fn describe(&self) -> String {
        let what = match self.kind {
            OpKind::Put => format!("put {:?} = {:?}", self.key, self.value),
            OpKind::Append => format!("append {:?} += {:?}", self.key, self.value),
            OpKind::Get => format!("get {:?} -> {:?}", self.key, self.output),
        };
        let ret = match (self.ok, self.ret) {
            (true, Some(r)) => r.to_string(),
            _ => "unknown outcome".to_owned(),
        };
        format!("client {} {what} [{}, {ret}]", self.client, self.call)
    }
}

/// Why a history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: line {line}: {source}")]
    Read {
        path: PathBuf,
        line: usize,
        source: io::Error,
    },
    #[error("{path}: line {line}: {source}")]
    Json {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("{path}: line {line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl HistoryError {
    /// The 1-based line the error is on, if it is about a line.
    pub fn line(&self) -> Option<usize> {
        match self {
            HistoryError::Open { .. } => None,
            HistoryError::Read { line, .. }
            | HistoryError::Json { line, .. }
            | HistoryError::Invalid { line, .. } => Some(*line),
        }
    }
}

/// Parses one line (not blank). `line` and `path` only label errors.
pub fn parse_line(text: &str, line: usize, path: &Path) -> Result<Operation, HistoryError> {
    let op: Operation = serde_json::from_str(text).map_err(|source| HistoryError::Json {
        path: path.to_owned(),
        line,
        source,
    })?;
    op.validate().map_err(|reason| HistoryError::Invalid {
        path: path.to_owned(),
        line,
        reason,
    })?;
    Ok(op)
}

/// Reads a whole history from `reader`; `path` only labels errors.
pub fn read_history(reader: impl BufRead, path: &Path) -> Result<Vec<Operation>, HistoryError> {
    Ok(read_history_with_lines(reader, path)?
        .into_iter()
        .map(|(_, op)| op)
        .collect())
}

/// Reads a whole history, pairing each operation with its 1-based line number.
pub fn read_history_with_lines(
    reader: impl BufRead,
    path: &Path,
) -> Result<Vec<(usize, Operation)>, HistoryError> {
    let mut ops = Vec::new();
    for (i, text) in reader.lines().enumerate() {
        let line = i + 1;
        let text = text.map_err(|source| HistoryError::Read {
            path: path.to_owned(),
            line,
            source,
        })?;
        if text.trim().is_empty() {
            continue;
        }
        ops.push((line, parse_line(&text, line, path)?));
    }
    Ok(ops)
}

/// Reads a history file.
pub fn read_history_file(path: &Path) -> Result<Vec<Operation>, HistoryError> {
    Ok(read_history_file_with_lines(path)?
        .into_iter()
        .map(|(_, op)| op)
        .collect())
}

/// Reads a history file, pairing each operation with its 1-based line number.
pub fn read_history_file_with_lines(path: &Path) -> Result<Vec<(usize, Operation)>, HistoryError> {
    let file = File::open(path).map_err(|source| HistoryError::Open {
        path: path.to_owned(),
        source,
    })?;
    read_history_with_lines(BufReader::new(file), path)
}

/// Writes histories, one operation per line. Call [`HistoryWriter::flush`] (or drop a `BufWriter`
/// underneath after flushing) before reading the file.
#[derive(Debug)]
pub struct HistoryWriter<W: Write> {
    out: W,
}

impl<W: Write> HistoryWriter<W> {
    pub fn new(out: W) -> Self {
        HistoryWriter { out }
    }

    /// Writes one operation as a line. Refuses an operation that would not read back.
    pub fn write(&mut self, op: &Operation) -> io::Result<()> {
        op.validate()
            .map_err(|reason| io::Error::new(io::ErrorKind::InvalidInput, reason))?;
        serde_json::to_writer(&mut self.out, op)?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Operation>, HistoryError> {
        read_history(text.as_bytes(), Path::new("h.jsonl"))
    }

    #[test]
    fn reads_the_documented_example_and_defaults() {
        let ops = parse(concat!(
            r#"{"client":1,"kind":"put","key":"k","value":"v","output":"","call":123,"return":456,"ok":true}"#,
            "\n\n",
            r#"{"client":2,"kind":"get","key":"k","output":"v","call":200,"return":300,"ok":true}"#,
            "\n",
            r#"{"client":3,"kind":"append","key":"k","value":"x","call":250,"ok":false}"#,
        ))
        .unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].kind, OpKind::Put);
        assert_eq!(ops[1].output, "v");
        assert_eq!(ops[1].value, "");
        assert_eq!(ops[2].ret, None);
        assert!(!ops[2].ok);
    }

    #[test]
    fn unknown_field_is_rejected_with_its_line_number() {
        let e = parse(concat!(
            r#"{"client":1,"kind":"get","key":"k","call":1,"return":2,"ok":true}"#,
            "\n",
            r#"{"client":1,"kind":"get","key":"k","call":1,"return":2,"ok":true,"sneaky":1}"#,
        ))
        .unwrap_err();
        assert_eq!(e.line(), Some(2));
        assert!(e.to_string().contains("sneaky"), "{e}");
    }

    #[test]
    fn bad_json_and_bad_values_name_the_line() {
        let good = r#"{"client":1,"kind":"get","key":"k","call":1,"return":2,"ok":true}"#;
        let cases = [
            (format!("{good}\n{good}\n{{not json"), 3),
            (format!("{good}\n{}", good.replace("get", "cas")), 2),
            (good.replace(r#","return":2"#, ""), 1),
            (
                good.replace(r#""return":2"#, r#""return":0"#)
                    .replace(r#""call":1"#, r#""call":5"#),
                1,
            ),
            (good.replace(r#""call":1"#, r#""call":-1"#), 1),
        ];
        for (text, line) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line(), Some(line), "{text}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("h.jsonl: line {line}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn writer_output_reads_back() {
        let ops = vec![
            Operation {
                client: 1,
                kind: OpKind::Append,
                key: "k\"\n".into(),
                value: "é".into(),
                output: String::new(),
                call: 5,
                ret: Some(9),
                ok: true,
            },
            Operation {
                client: 2,
                kind: OpKind::Put,
                key: "k".into(),
                value: "v".into(),
                output: String::new(),
                call: 6,
                ret: None,
                ok: false,
            },
        ];
        let mut w = HistoryWriter::new(Vec::new());
        for op in &ops {
            w.write(op).unwrap();
        }
        let bytes = w.into_inner();
        assert_eq!(parse(std::str::from_utf8(&bytes).unwrap()).unwrap(), ops);
        let mut bad = ops[0].clone();
        bad.ret = None;
        assert!(HistoryWriter::new(Vec::new()).write(&bad).is_err());
    }
}
