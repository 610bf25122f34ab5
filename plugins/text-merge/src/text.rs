//! Three-way merge of text: by lines, then by words inside the lines both
//! sides changed. A merge succeeds or reports that the edits overlap; it never
//! produces conflict markers.
//!
//! The diff3 is `diffy`'s, which merges line by line. Each token (a line, or
//! a word) is handed to it as one escaped line that starts with `T`, so the
//! markers of a conflicting result can never be mistaken for text, and the
//! regions both sides changed are read back from between them.

use diffy::{ConflictStyle, MergeOptions};

/// A stretch of a diff3 result.
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// Merged text.
    Clean(String),
    /// A region both sides changed differently: its text in base, ours and theirs.
    Overlap { base: String, ours: String, theirs: String },
}

/// Merges the edits `ours` and `theirs` made to `base`; `None` when they overlap.
///
/// Lines first: lines only one side changed take that side's text. A region
/// of lines both sides changed is merged again word by word (a word is a run
/// of non-space characters; spaces and line breaks are tokens of their own),
/// and is an overlap only if the same words changed. Line endings, CRLF
/// included, are kept as each side wrote them.
pub fn merge(base: &str, ours: &str, theirs: &str) -> Option<String> {
    if ours == theirs || theirs == base {
        return Some(ours.to_string());
    }
    if ours == base {
        return Some(theirs.to_string());
    }
    let mut merged = String::with_capacity(ours.len().max(theirs.len()));
    for chunk in diff3(&lines(base), &lines(ours), &lines(theirs))? {
        match chunk {
            Chunk::Clean(text) => merged.push_str(&text),
            Chunk::Overlap { base, ours, theirs } => {
                for chunk in diff3(&words(&base), &words(&ours), &words(&theirs))? {
                    match chunk {
                        Chunk::Clean(text) => merged.push_str(&text),
                        Chunk::Overlap { .. } => return None,
                    }
                }
            }
        }
    }
    Some(merged)
}

/// Lines, each with its line break (`\n` or `\r\n`); the last may have none.
fn lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

/// Words (runs of non-space characters), runs of spaces, and line breaks
/// (`\n` or `\r\n`, one token each). Concatenated, the tokens are `text`.
fn words(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(first) = rest.chars().next() {
        let len = if rest.starts_with("\r\n") {
            2
        } else if first == '\n' {
            1
        } else {
            let space = first.is_whitespace();
            rest.char_indices()
                .find(|&(i, c)| c == '\n' || rest[i..].starts_with("\r\n") || c.is_whitespace() != space)
                .map_or(rest.len(), |(i, _)| i)
        };
        let (token, tail) = rest.split_at(len);
        tokens.push(token);
        rest = tail;
    }
    tokens
}

/// diffy's three-way merge of token sequences, as clean and overlapping
/// chunks; `None` if its output cannot be read back (never expected).
fn diff3(base: &[&str], ours: &[&str], theirs: &[&str]) -> Option<Vec<Chunk>> {
    let mut options = MergeOptions::new();
    options.set_conflict_style(ConflictStyle::Diff3);
    match options.merge(&encode(base), &encode(ours), &encode(theirs)) {
        Ok(merged) => Some(vec![Chunk::Clean(decode_all(&merged)?)]),
        Err(marked) => read_overlaps(&marked),
    }
}

/// One line per token: `T`, the token with `\`, `\n` and `\r` escaped, `\n`.
fn encode(tokens: &[&str]) -> String {
    let mut out = String::with_capacity(tokens.iter().map(|t| t.len() + 3).sum());
    for token in tokens {
        out.push('T');
        for c in token.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    out
}

/// The token of one encoded line (without its `\n`), appended to `out`.
fn decode_into(line: &str, out: &mut String) -> Option<()> {
    let mut chars = line.strip_prefix('T')?.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '\\' => match chars.next()? {
                '\\' => '\\',
                'n' => '\n',
                'r' => '\r',
                _ => return None,
            },
            c => c,
        });
    }
    Some(())
}

fn decode_all(encoded: &str) -> Option<String> {
    let mut out = String::with_capacity(encoded.len());
    for line in encoded.split_terminator('\n') {
        decode_into(line, &mut out)?;
    }
    Some(out)
}

/// Splits diffy's marked-up result (diff3 style: ours, `|||||||` base,
/// `=======` theirs) into chunks.
fn read_overlaps(marked: &str) -> Option<Vec<Chunk>> {
    #[derive(PartialEq)]
    enum Part {
        Clean,
        Ours,
        Base,
        Theirs,
    }
    let mut chunks = Vec::new();
    let (mut clean, mut base, mut ours, mut theirs) = (String::new(), String::new(), String::new(), String::new());
    let mut part = Part::Clean;
    for line in marked.split_terminator('\n') {
        if line.starts_with('T') {
            let out = match part {
                Part::Clean => &mut clean,
                Part::Ours => &mut ours,
                Part::Base => &mut base,
                Part::Theirs => &mut theirs,
            };
            decode_into(line, out)?;
        } else if line.starts_with("<<<<<<<") && part == Part::Clean {
            if !clean.is_empty() {
                chunks.push(Chunk::Clean(std::mem::take(&mut clean)));
            }
            part = Part::Ours;
        } else if line.starts_with("|||||||") && part == Part::Ours {
            part = Part::Base;
        } else if line.starts_with("=======") && part == Part::Base {
            part = Part::Theirs;
        } else if line.starts_with(">>>>>>>") && part == Part::Theirs {
            let (base, ours, theirs) =
                (std::mem::take(&mut base), std::mem::take(&mut ours), std::mem::take(&mut theirs));
            chunks.push(Chunk::Overlap { base, ours, theirs });
            part = Part::Clean;
        } else {
            return None;
        }
    }
    if part != Part::Clean {
        return None;
    }
    if !clean.is_empty() {
        chunks.push(Chunk::Clean(clean));
    }
    Some(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_concatenate_back_to_the_text() {
        let text = "Grüße, 世界! 👩‍👩‍👧 done\r\n\tnext  line\nlast";
        assert_eq!(words(text).concat(), text);
        assert_eq!(words("a  b\r\nc\n"), ["a", "  ", "b", "\r\n", "c", "\n"]);
        assert_eq!(words(" \r\n"), [" ", "\r\n"]);
        assert_eq!(lines("a\r\nb\nc"), ["a\r\n", "b\n", "c"]);
        let tokens = ["T<<<<<<< ours", "a\\b\r\n", "", "=======\n"];
        let mut decoded = String::new();
        for line in encode(&tokens).split_terminator('\n') {
            decode_into(line, &mut decoded).expect("decodes");
        }
        assert_eq!(decoded, tokens.concat());
    }

    #[test]
    fn overlaps_are_read_back_from_between_the_markers() {
        let chunks = diff3(&["a\n", "b\n", "c\n"], &["a\n", "B\n", "c\n"], &["a\n", "b!\n", "c\n"]).expect("readable");
        assert_eq!(
            chunks,
            [
                Chunk::Clean("a\n".into()),
                Chunk::Overlap { base: "b\n".into(), ours: "B\n".into(), theirs: "b!\n".into() },
                Chunk::Clean("c\n".into()),
            ]
        );
    }
}
