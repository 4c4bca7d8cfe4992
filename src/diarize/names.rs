//! Display labels of a track's speakers, and renames.
//!
//! Speaker ids from the clusterer get labels in the order they first appear in a final: without
//! a participant name `S1`, `S2`, ...; with one (`Anne`) the first voice is `Anne` and the next
//! ones `Anne — voice 2`, `Anne — voice 3`. A label, once given to a final, never changes.
//! [`Renames`] maps a label to the name an operator gave it ("voice 2 = Marie"): it applies to
//! the events made after the rename and to renderings (exports) of earlier ones.

use std::collections::HashMap;

/// Longest speaker name accepted by a rename, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Labels of one track's speakers.
#[derive(Debug, Clone, Default)]
pub struct SpeakerNames {
    participant: Option<String>,
    order: Vec<usize>,
}

impl SpeakerNames {
    /// Labels for a track of `participant` (or an anonymous track).
    pub fn new(participant: Option<String>) -> Self {
        Self {
            participant: participant.filter(|p| !p.trim().is_empty()),
            order: Vec::new(),
        }
    }

    fn label_of_index(&self, n: usize) -> String {
        match (&self.participant, n) {
            (Some(p), 1) => p.clone(),
            (Some(p), n) => format!("{p} — voice {n}"),
            (None, n) => format!("S{n}"),
        }
    }

    /// The label of `speaker` for a final: allocated on first use and kept.
    pub fn commit(&mut self, speaker: usize) -> String {
        let n = match self.order.iter().position(|s| *s == speaker) {
            Some(i) => i + 1,
            None => {
                self.order.push(speaker);
                self.order.len()
            }
        };
        self.label_of_index(n)
    }

    /// The label `speaker` has or would get next (for partials; allocates nothing).
    pub fn provisional(&self, speaker: usize) -> String {
        let n = self
            .order
            .iter()
            .position(|s| *s == speaker)
            .map_or(self.order.len() + 1, |i| i + 1);
        self.label_of_index(n)
    }

    /// Number of labels given so far.
    pub fn count(&self) -> usize {
        self.order.len()
    }

    /// Labels given so far, in order.
    pub fn labels(&self) -> Vec<String> {
        (1..=self.order.len())
            .map(|n| self.label_of_index(n))
            .collect()
    }
}

/// Invalid rename.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenameError {
    #[error("the label is empty")]
    EmptyLabel,
    #[error("the name is empty")]
    EmptyName,
    #[error("the name is longer than {MAX_NAME_CHARS} characters")]
    NameTooLong,
    #[error("the name contains control characters")]
    ControlCharacters,
}

/// Label → name map of renamed speakers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Renames {
    map: HashMap<String, String>,
}

impl Renames {
    /// Names `label` as `name` (trimmed). Renaming a label to itself removes the rename.
    pub fn set(&mut self, label: &str, name: &str) -> Result<(), RenameError> {
        let (label, name) = (label.trim(), name.trim());
        if label.is_empty() {
            return Err(RenameError::EmptyLabel);
        }
        if name.is_empty() {
            return Err(RenameError::EmptyName);
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(RenameError::NameTooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(RenameError::ControlCharacters);
        }
        if label == name {
            self.map.remove(label);
        } else {
            self.map.insert(label.to_string(), name.to_string());
        }
        Ok(())
    }

    /// The name to show for `label`.
    pub fn display<'a>(&'a self, label: &'a str) -> &'a str {
        self.map.get(label).map_or(label, String::as_str)
    }

    /// Applies the renames to an event's speaker and words.
    pub fn apply(&self, ev: &mut crate::captions::CaptionEvent) {
        if self.map.is_empty() {
            return;
        }
        if let Some(s) = &mut ev.speaker
            && let Some(n) = self.map.get(s.as_str())
        {
            *s = n.clone();
        }
        for w in &mut ev.words {
            if let Some(s) = &mut w.speaker
                && let Some(n) = self.map.get(s.as_str())
            {
                *s = n.clone();
            }
        }
    }

    /// The renames, sorted by label.
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_labels_follow_first_use() {
        let mut n = SpeakerNames::new(None);
        assert_eq!(n.provisional(4), "S1");
        assert_eq!(n.commit(4), "S1");
        assert_eq!(n.provisional(2), "S2");
        assert_eq!(n.commit(2), "S2");
        assert_eq!(n.commit(4), "S1");
        assert_eq!(n.labels(), vec!["S1", "S2"]);
    }

    #[test]
    fn participant_voices() {
        let mut n = SpeakerNames::new(Some("Anne".into()));
        assert_eq!(n.commit(0), "Anne");
        assert_eq!(n.commit(1), "Anne — voice 2");
        assert_eq!(n.provisional(7), "Anne — voice 3");
    }

    #[test]
    fn renames_apply_and_are_checked() {
        let mut r = Renames::default();
        r.set("Anne — voice 2", " Marie ").unwrap();
        assert_eq!(r.display("Anne — voice 2"), "Marie");
        assert_eq!(r.display("Anne"), "Anne");
        assert_eq!(r.set("S1", ""), Err(RenameError::EmptyName));
        assert_eq!(r.set("", "x"), Err(RenameError::EmptyLabel));
        assert_eq!(r.set("S1", "a\nb"), Err(RenameError::ControlCharacters));
        assert_eq!(r.set("S1", &"x".repeat(65)), Err(RenameError::NameTooLong));
        r.set("Anne — voice 2", "Anne — voice 2").unwrap();
        assert!(r.entries().is_empty());
    }
}
