//! Three-way merge of text: by lines, then by words inside the lines both
//! sides changed. A merge succeeds or reports that the edits overlap; it never
//! produces conflict markers.
//!
//! The diff3 is `diffy`'s, which merges line by line. When its plain merge of
//! the texts finds lines both sides changed, the texts are merged again with
//! each token (a line, then a word) handed to diffy as one escaped line that
//! starts with `T`, so the markers of its result can never be mistaken for
//! text, and the regions both sides changed are read back from between them.

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
    // Most edits do not touch the same lines: then diffy's plain line merge is
    // the result, and the tokens need no escaping (half the memory of a long body).
    if let Ok(merged) = options().merge(base, ours, theirs) {
        return Some(merged);
    }
    // Lines all three share at the start and at the end are kept as they are;
    // only the stretch between them is merged again, token by token.
    let start = common_prefix([base, ours, theirs]);
    let end = common_suffix([&base[start..], &ours[start..], &theirs[start..]]);
    let [b, o, t] = [base, ours, theirs].map(|text| &text[start..text.len() - end]);
    let mut merged = String::with_capacity(ours.len().max(theirs.len()));
    merged.push_str(&base[..start]);
    for chunk in diff3(&lines(b), &lines(o), &lines(t))? {
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
    merged.push_str(&base[base.len() - end..]);
    Some(merged)
}

/// The length of the whole lines all three texts start with.
fn common_prefix([first, b, c]: [&str; 3]) -> usize {
    let mut len = 0;
    for line in first.split_inclusive('\n') {
        if !line.ends_with('\n') || !b[len..].starts_with(line) || !c[len..].starts_with(line) {
            break;
        }
        len += line.len();
    }
    len
}

/// The length of the whole lines all three texts end with (the last one may
/// lack a line break), never more than the shortest text.
fn common_suffix(texts: [&str; 3]) -> usize {
    let shortest = texts.iter().map(|t| t.len()).min().unwrap_or_default();
    let mut len = 0;
    for line in texts[0].split_inclusive('\n').rev() {
        let next = len + line.len();
        // `line` ends each text before the `len` bytes already matched, and starts a line there.
        let ends = |t: &str| {
            t[..t.len() - len].ends_with(line) && (t.len() == next || t.as_bytes()[t.len() - next - 1] == b'\n')
        };
        if next > shortest || !texts.iter().all(|t| ends(t)) {
            break;
        }
        len = next;
    }
    len
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
    match options().merge(&encode(base), &encode(ours), &encode(theirs)) {
        Ok(merged) => Some(vec![Chunk::Clean(decode_all(&merged)?)]),
        Err(marked) => read_overlaps(&marked),
    }
}

/// diffy's merge, marking an overlap with the base's text between ours and theirs.
fn options() -> MergeOptions {
    let mut options = MergeOptions::new();
    options.set_conflict_style(ConflictStyle::Diff3);
    options
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
    fn common_lines_at_both_ends_are_whole_lines() {
        assert_eq!(common_prefix(["a\nb\nc", "a\nb\nd", "a\nbb\n"]), 2);
        assert_eq!(common_prefix(["a\nb", "a\nb", "a\nb!"]), 2, "a last line without a break is never shared");
        assert_eq!(common_prefix(["é\n", "é\n", "é\n"]), 3);
        assert_eq!(common_suffix(["x\nend", "y\nend", "end"]), 3);
        assert_eq!(common_suffix(["x\nend", "y\nfriend", "end"]), 0, "`end` is not a whole line of `friend`");
        assert_eq!(common_suffix(["b\n", "X\nb\n", "b\n"]), 2);
        assert_eq!(common_suffix(["\n\n", "\n", "x\n\n"]), 1, "never more than the shortest text");
        assert_eq!(common_suffix(["a\r\nz\r\n", "b\r\nz\r\n", "c\r\nz\r\n"]), 3);
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
