//! `text-merge` on real-looking edits of a note, and `field-merge`'s rule for everything else.

use accord_policy_sdk::testing::{incoming, input, stored, tombstone};
use accord_policy_sdk::{IncomingRecord, StoredRecord};
use serde_json::{Value, json};

use super::*;

const NOTE: &str = "# Trip to Lisbon\n\
    \n\
    Flights booked for May 3rd. Need to check the baggage allowance.\n\
    \n\
    Hotel: Alfama, near the castle. Breakfast included.\n\
    \n\
    To do:\n\
    - buy adapters\n\
    - print tickets\n\
    - ask Ana about tram 28\n";

fn record(version: i64, body: &str) -> StoredRecord {
    stored(version, &json!({"title": "Lisbon", "body": body}).to_string())
}

fn change(body: &str) -> IncomingRecord {
    incoming(2, 1, &json!({"title": "Lisbon", "body": body}).to_string())
}

/// Base `NOTE` at version 1, the server's edit at version 2, and the incoming edit made on version 1.
fn decide_bodies(server: &str, mine: &str) -> Decision {
    let mut i = input(Some(record(2, server)), Some(record(1, NOTE)), change(mine));
    i.set_settings(r#"{"fields":["body"]}"#);
    decide(&i)
}

/// The merged body, or a panic naming the decision.
fn merged_body(decision: Decision) -> String {
    let Decision::Merged { data, deleted: false } = &decision else { panic!("expected merged, got {decision:?}") };
    let v: Value = serde_json::from_str(data).expect("merged data is JSON");
    v["body"].as_str().expect("body is a string").to_string()
}

fn is_conflict(decision: &Decision) -> bool {
    matches!(decision, Decision::Conflict(reason) if reason == "both sides changed body")
}

#[test]
fn inserts_at_both_ends_merge() {
    let server = format!("Packing list is in the other note.\n\n{NOTE}");
    let mine = format!("{NOTE}- book the Sintra day trip\n");
    let body = merged_body(decide_bodies(&server, &mine));
    assert_eq!(body, format!("Packing list is in the other note.\n\n{NOTE}- book the Sintra day trip\n"));
    // Inserts at the ends of a body without a final line break.
    let base = "middle";
    assert_eq!(merge_text(base, "top\nmiddle", "middle\nbottom").as_deref(), Some("top\nmiddle\nbottom"));
}

#[test]
fn different_paragraphs_merge() {
    let server = NOTE.replace("Need to check the baggage allowance.", "Baggage: 23 kg checked.");
    let mine = NOTE.replace("Breakfast included.", "Breakfast included, late checkout asked.");
    let body = merged_body(decide_bodies(&server, &mine));
    assert_eq!(
        body,
        NOTE.replace("Need to check the baggage allowance.", "Baggage: 23 kg checked.")
            .replace("Breakfast included.", "Breakfast included, late checkout asked.")
    );
    // Adjacent lines (no blank line between them) merge too.
    let server = NOTE.replace("- buy adapters", "- buy two adapters");
    let mine = NOTE.replace("- print tickets", "- print tickets and the hotel voucher");
    let body = merged_body(decide_bodies(&server, &mine));
    assert!(body.contains("- buy two adapters\n- print tickets and the hotel voucher\n"), "{body}");
}

#[test]
fn edits_of_the_same_line_conflict() {
    let server = NOTE.replace("May 3rd", "May 4th");
    let mine = NOTE.replace("May 3rd", "May 5th");
    assert!(is_conflict(&decide_bodies(&server, &mine)));
    // A line rewritten on one side and edited on the other.
    let server = NOTE.replace("Hotel: Alfama, near the castle. Breakfast included.", "Staying with Rita instead.");
    let mine = NOTE.replace("near the castle", "next to the castle");
    assert!(is_conflict(&decide_bodies(&server, &mine)));
    // Both inserting at the same place: which goes first is not for the server to guess.
    let server = format!("{NOTE}- pack the charger\n");
    let mine = format!("{NOTE}- book the Sintra day trip\n");
    assert!(is_conflict(&decide_bodies(&server, &mine)));
}

#[test]
fn different_words_of_one_line_merge() {
    let server = NOTE.replace("Flights booked", "Flights finally booked");
    let mine = NOTE.replace("the baggage allowance.", "the baggage allowance with TAP.");
    let body = merged_body(decide_bodies(&server, &mine));
    assert!(body.contains("\nFlights finally booked for May 3rd. Need to check the baggage allowance with TAP.\n"));
    assert_eq!(body.lines().count(), NOTE.lines().count());
    // The same edit on both sides is no conflict.
    let both = NOTE.replace("tram 28", "tram 28 and the 15E");
    assert_eq!(decide_bodies(&both, &both), Decision::Accept);
    let server = both.replace("May 3rd", "May 4th");
    assert_eq!(merged_body(decide_bodies(&server, &both)), server);
}

#[test]
fn deleting_a_paragraph_merges_with_an_edit_of_another() {
    let server = NOTE.replace("Hotel: Alfama, near the castle. Breakfast included.\n\n", "");
    let mine = NOTE.replace("- print tickets", "- print tickets (done)");
    let body = merged_body(decide_bodies(&server, &mine));
    assert_eq!(
        body,
        NOTE.replace("Hotel: Alfama, near the castle. Breakfast included.\n\n", "")
            .replace("- print tickets", "- print tickets (done)")
    );
    // The other way round: the delete comes in, the edit is on the server.
    let body = merged_body(decide_bodies(&mine, &server));
    assert!(!body.contains("Hotel") && body.contains("(done)"), "{body}");
}

#[test]
fn deleting_a_paragraph_conflicts_with_an_edit_of_it() {
    let server = NOTE.replace("Hotel: Alfama, near the castle. Breakfast included.\n\n", "");
    let mine = NOTE.replace("Breakfast included.", "Breakfast included from 7:30.");
    assert!(is_conflict(&decide_bodies(&server, &mine)));
    assert!(is_conflict(&decide_bodies(&mine, &server)));
    // Deleting a list item while the other side edits that very item.
    let server = NOTE.replace("- buy adapters\n", "");
    let mine = NOTE.replace("- buy adapters", "- buy EU adapters");
    assert!(is_conflict(&decide_bodies(&server, &mine)));
}

#[test]
fn unicode_text_merges_by_characters_never_by_bytes() {
    let base = "Café ☕ at 9 — with Zoë 👩‍👩‍👧\nSunset at Miradouro 🌅\nDinner: bacalhau à Brás\n";
    let server = "Café ☕ at 10 — with Zoë 👩‍👩‍👧\nSunset at Miradouro 🌅\nDinner: bacalhau à Brás\n";
    let mine = "Café ☕ at 9 — with Zoë and Łukasz 👩‍👩‍👧\nSunset at Miradouro 🌅🌇\nDinner: bacalhau à Brás\n";
    let merged = merge_text(base, server, mine).expect("different words");
    assert_eq!(merged, "Café ☕ at 10 — with Zoë and Łukasz 👩‍👩‍👧\nSunset at Miradouro 🌅🌇\nDinner: bacalhau à Brás\n");
    // Changing the same emoji differently overlaps.
    assert_eq!(merge_text(base, &base.replace('🌅', "🌄"), &base.replace('🌅', "🌆")), None);
    // Scripts without spaces: a line is one word, so two edits of one line overlap, two lines merge.
    let base = "東京で会いましょう。\n駅の北口で。\n";
    let merged = merge_text(base, "大阪で会いましょう。\n駅の北口で。\n", "東京で会いましょう。\n駅の南口で。\n");
    assert_eq!(merged.as_deref(), Some("大阪で会いましょう。\n駅の南口で。\n"));
    // Through the policy, as JSON with escapes.
    let server = NOTE.replace("Lisbon", "Lisboa 🇵🇹");
    let mine = NOTE.replace("tram 28", "tram 28 🚋");
    let body = merged_body(decide_bodies(&server, &mine));
    assert!(body.starts_with("# Trip to Lisboa 🇵🇹\n") && body.ends_with("tram 28 🚋\n"), "{body}");
}

#[test]
fn crlf_line_endings_are_kept() {
    let base = NOTE.replace('\n', "\r\n");
    let server = base.replace("May 3rd", "May 4th");
    let mine = base.replace("- print tickets", "- print tickets\r\n- check in online");
    let body = merged_body(decide_bodies_from(&base, &server, &mine));
    assert_eq!(
        body,
        base.replace("May 3rd", "May 4th").replace("- print tickets", "- print tickets\r\n- check in online")
    );
    assert_eq!(body.matches("\r\n").count(), body.matches('\n').count());
    // Words of one CRLF line, and a last line without a line break.
    assert_eq!(merge_text("a b c\r\nd", "A b c\r\nd", "a b C\r\nd!").as_deref(), Some("A b C\r\nd!"));
}

fn decide_bodies_from(base: &str, server: &str, mine: &str) -> Decision {
    let mut i = input(Some(record(2, server)), Some(record(1, base)), change(mine));
    i.set_settings(r#"{"fields":["body"]}"#);
    decide(&i)
}

#[test]
fn conflict_markers_are_never_written_into_data() {
    // Text that looks like diffy's markers merges as text.
    let base = "<<<<<<< ours\nkeep\n=======\nT\\n\n>>>>>>> theirs\n";
    let merged = merge_text(base, &base.replace("keep", "kept"), &format!("{base}|||||||\n")).expect("merges");
    assert_eq!(merged, "<<<<<<< ours\nkept\n=======\nT\\n\n>>>>>>> theirs\n|||||||\n");
    // ...also where the lines overlap and are merged again word by word.
    let base = "<<<<<<< ours\nx y\n=======\n|||||||\n";
    let merged =
        merge_text(base, &base.replace('x', "X"), &base.replace('y', "Y").replace("|||||||\n", "")).expect("merges");
    assert_eq!(merged, "<<<<<<< ours\nX Y\n=======\n");
    // An overlap is a conflict decision; the server's record is untouched.
    for (server, mine) in [
        (NOTE.replace("May 3rd", "May 4th"), NOTE.replace("May 3rd", "May 5th")),
        (NOTE.replace("- buy adapters\n", ""), NOTE.replace("adapters", "plugs")),
        (format!("{NOTE}one"), format!("{NOTE}two")),
    ] {
        let decision = decide_bodies(&server, &mine);
        assert!(is_conflict(&decision), "{decision:?}");
    }
}

#[test]
fn without_a_base_it_decides_as_field_merge() {
    let settings = r#"{"fields":["body"]}"#;
    let with = |server: &str, mine: &str| {
        let mut i = input(Some(record(3, server)), None, change(mine));
        i.set_settings(settings);
        i
    };
    let mine = NOTE.replace("tram 28", "tram 15");
    let d = decide(&with(NOTE, &mine));
    assert!(matches!(&d, Decision::Conflict(r) if r.contains("no longer known")), "{d:?}");
    assert_eq!(decide(&with(NOTE, NOTE)), Decision::Accept);
    let mut new = input(None, None, change(NOTE));
    new.set_settings(settings);
    assert_eq!(decide(&new), Decision::Accept);
}

#[test]
fn values_that_are_not_strings_follow_field_merge() {
    let settings = r#"{"fields":["body"]}"#;
    let case = |base: Value, server: Value, mine: Value| {
        let mut i = input(
            Some(stored(2, &json!({ "body": server }).to_string())),
            Some(stored(1, &json!({ "body": base }).to_string())),
            incoming(2, 1, &json!({ "body": mine }).to_string()),
        );
        i.set_settings(settings);
        decide(&i)
    };
    // Both changed, not all strings: a conflict, as field-merge says.
    assert!(is_conflict(&case(json!("a\nb\n"), json!(["a", "b"]), json!("a\nB\n"))));
    assert!(is_conflict(&case(json!(null), json!("a\n"), json!("b\n"))));
    assert!(is_conflict(&case(json!({"ops": 1}), json!({"ops": 2}), json!({"ops": 3}))));
    assert!(is_conflict(&case(json!(1), json!(2), json!(3))));
    // One side alone changed it: that side's value.
    let d = case(json!("text\n"), json!(42), json!("text\n"));
    let Decision::Merged { data, .. } = d else { panic!("expected merged, got {d:?}") };
    assert_eq!(serde_json::from_str::<Value>(&data).expect("json"), json!({"body": 42}));
    // A field removed on one side and edited on the other conflicts.
    let mut i = input(
        Some(stored(2, r#"{"title":"t"}"#)),
        Some(stored(1, r#"{"title":"t","body":"a\n"}"#)),
        incoming(2, 1, r#"{"title":"t","body":"a\nb\n"}"#),
    );
    i.set_settings(settings);
    assert!(is_conflict(&decide(&i)));
}

#[test]
fn other_fields_are_decided_exactly_as_field_merge_decides() {
    let base = Some(stored(1, r#"{"title":"t","tags":["a"],"at":1,"body":"x\n"}"#));
    let servers = [
        Some(stored(2, r#"{"title":"T","tags":["a"],"at":5,"body":"x\n"}"#)),
        Some(stored(2, r#"{"title":"t","tags":["a","b"],"at":5,"body":"x\n"}"#)),
        Some(stored(1, r#"{"title":"t","tags":["a"],"at":1,"body":"x\n"}"#)),
        Some(tombstone(2)),
        None,
    ];
    let mines = [
        r#"{"title":"mine","tags":["a"],"at":9,"body":"x\n"}"#,
        r#"{"title":"t","tags":["c"],"at":3,"body":"x\n"}"#,
        r#"{"title":"t","tags":["a"],"at":1,"body":"x\n"}"#,
        r#"{"title":"t","at":1}"#,
        "[]",
    ];
    let settings = [
        r#"{"fields":["body"]}"#,
        r#"{"fields":["body"],"ignore":["at"]}"#,
        r#"{"fields":["body"],"later_wins":["title","tags"],"by":"at","ignore":["at"]}"#,
    ];
    for server in &servers {
        for base in [&base, &None] {
            for mine in mines {
                for deleted in [false, true] {
                    for s in settings {
                        let mut change = incoming(2, 1, mine);
                        change.deleted = deleted;
                        let mut i = input(server.clone(), base.clone(), change);
                        i.set_settings(s);
                        let expected = accord_policy_field_merge::decide(&i);
                        let expected = match expected {
                            Decision::Reject(r) => Decision::Reject(r.replace("field-merge", "text-merge")),
                            other => other,
                        };
                        assert_eq!(decide(&i), expected, "server {server:?} base {base:?} incoming {mine} {s}");
                    }
                }
            }
        }
    }
}

#[test]
fn settings_name_the_text_fields_and_settle_overlaps_as_field_merge_would() {
    let server = NOTE.replace("May 3rd", "May 4th");
    let mine = NOTE.replace("May 3rd", "May 5th");
    let with = |settings: &str| {
        let mut i = input(Some(record(2, &server)), Some(record(1, NOTE)), change(&mine));
        i.set_settings(settings);
        decide(&i)
    };
    // Without `fields` (or with a wrong type) the record is kept as a conflict naming the mistake.
    for bad in ["{}", r#"{"fields":"body"}"#, r#"{"fields":["body"],"ignore":"x"}"#] {
        let d = with(bad);
        assert!(matches!(&d, Decision::Fail(r) if r.starts_with("text-merge needs")), "{bad}: {d:?}");
    }
    // A body that is not listed is an ordinary field: both changed it, conflict.
    assert!(is_conflict(&with(r#"{"fields":["text"]}"#)));
    // An overlap in a text field listed in `ignore` takes the incoming text.
    assert_eq!(with(r#"{"fields":["body"],"ignore":["body"]}"#), Decision::Accept);
}

#[test]
fn a_long_note_merges_quickly() {
    let base: String =
        (0..2000).map(|n| format!("Paragraph {n}: some words that make a line of a note.\n\n")).collect();
    let server = base
        .replace("Paragraph 10:", "Paragraph ten:")
        .replace("line of a note.\n\nParagraph 1999", "line.\n\nParagraph 1999");
    let mine = base.replace("Paragraph 1500: some", "Paragraph 1500: many more").replace("Paragraph 3:", "");
    let started = std::time::Instant::now();
    let merged = merge_text(&base, &server, &mine).expect("no overlap");
    assert!(merged.contains("Paragraph ten:") && merged.contains("many more") && !merged.contains("Paragraph 3:"));
    let expected = base
        .replace("Paragraph 10:", "Paragraph ten:")
        .replace("line of a note.\n\nParagraph 1999", "line.\n\nParagraph 1999")
        .replace("Paragraph 1500: some", "Paragraph 1500: many more")
        .replace("Paragraph 3:", "");
    assert_eq!(merged, expected);
    assert!(started.elapsed().as_millis() < 500, "{:?}", started.elapsed());
}

/// A small deterministic generator, so the randomized test needs no crate and always runs the same.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[test]
fn random_edits_of_different_lines_and_words_merge_to_both_edits() {
    let mut rng = Lcg(7);
    for round in 0..400 {
        let eol = if round % 3 == 0 { "\r\n" } else { "\n" };
        let n = 3 + rng.below(40);
        let line =
            |i: usize, words: &[String]| format!("{}{eol}", words.join(if i.is_multiple_of(5) { "  " } else { " " }));
        let base_words: Vec<Vec<String>> =
            (0..n).map(|i| (0..2 + rng.below(6)).map(|j| format!("w{i}é{j}🙂")).collect()).collect();
        let (mut base, mut ours, mut theirs, mut expected) =
            (String::new(), String::new(), String::new(), String::new());
        let mut overlap = false;
        for (i, words) in base_words.iter().enumerate() {
            let original = line(i, words);
            base.push_str(&original);
            // Odd lines stay as they are, so one side's line edits never touch the other's.
            let action = if i % 2 == 1 { 0 } else { rng.below(10) };
            let edit = |mut w: Vec<String>, j: usize, side: &str| {
                w[j] = format!("{side}{round}");
                line(i, &w)
            };
            let j = rng.below(words.len());
            let (o, t, e) = match action {
                1 => (edit(words.clone(), j, "O"), original.clone(), edit(words.clone(), j, "O")),
                2 => (original.clone(), edit(words.clone(), j, "T"), edit(words.clone(), j, "T")),
                3 => (String::new(), original.clone(), String::new()),
                4 => (original.clone(), String::new(), String::new()),
                5 => (format!("{original}new O{eol}"), original.clone(), format!("{original}new O{eol}")),
                6 => (original.clone(), format!("{original}new T{eol}"), format!("{original}new T{eol}")),
                7 if words.len() >= 3 => {
                    // Both sides, different words of this line (an unchanged word or space between).
                    let (a, b) =
                        (j.min(words.len() - 2), (j.min(words.len() - 2) + 1 + rng.below(2)).min(words.len() - 1));
                    let mut both = words.clone();
                    both[a] = format!("O{round}");
                    both[b] = format!("T{round}");
                    (edit(words.clone(), a, "O"), edit(words.clone(), b, "T"), line(i, &both))
                }
                8 => (edit(words.clone(), j, "S"), edit(words.clone(), j, "S"), edit(words.clone(), j, "S")),
                9 => {
                    overlap = true;
                    (edit(words.clone(), j, "O"), edit(words.clone(), j, "T"), String::new())
                }
                _ => (original.clone(), original.clone(), original.clone()),
            };
            ours.push_str(&o);
            theirs.push_str(&t);
            expected.push_str(&e);
        }
        let context = format!("round {round}\nbase:\n{base}\nours:\n{ours}\ntheirs:\n{theirs}");
        if overlap {
            assert_eq!(merge_text(&base, &ours, &theirs), None, "{context}");
            assert_eq!(merge_text(&base, &theirs, &ours), None, "{context}");
        } else {
            assert_eq!(merge_text(&base, &ours, &theirs).as_deref(), Some(expected.as_str()), "{context}");
            assert_eq!(merge_text(&base, &theirs, &ours).as_deref(), Some(expected.as_str()), "{context}");
        }
    }
}
