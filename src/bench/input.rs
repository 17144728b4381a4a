//! The input, read into memory once: files (or stdin), split into lines as
//! `auditsink parse` and the receiver split them.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;

/// The bytes of every input, kept for the lines to borrow from.
pub struct Input {
    /// Each input's name (`-` for stdin) and its bytes.
    sources: Vec<(String, Vec<u8>)>,
}

impl Input {
    /// Reads `files`; stdin when empty. `-` is stdin.
    pub fn read(files: &[PathBuf]) -> anyhow::Result<Input> {
        let stdin = [PathBuf::from("-")];
        let files = if files.is_empty() { &stdin[..] } else { files };
        let mut sources = Vec::with_capacity(files.len());
        for path in files {
            let (name, bytes) = if path.as_os_str() == "-" {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .lock()
                    .read_to_end(&mut bytes)
                    .context("reading stdin")?;
                ("-".to_owned(), bytes)
            } else {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                (path.display().to_string(), bytes)
            };
            sources.push((name, bytes));
        }
        Ok(Input { sources })
    }

    /// The inputs' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.sources.iter().map(|(name, _)| name.clone()).collect()
    }

    /// Every non-blank line of every input, in order, without its
    /// terminator (`\n`, and a `\r` before it); a file's last line need not
    /// end with a newline.
    pub fn lines(&self) -> Vec<&[u8]> {
        self.sources
            .iter()
            .flat_map(|(_, bytes)| auditsink_parser::lines(bytes))
            .collect()
    }
}

/// The bytes of `lines` (terminators not counted): what MB/s is of.
pub fn bytes_of(lines: &[&[u8]]) -> u64 {
    lines.iter().map(|line| line.len() as u64).sum()
}
