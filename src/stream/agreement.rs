//! Local agreement between consecutive partial hypotheses.
//!
//! A word becomes *stable* once `n` consecutive hypotheses agree on it (token for token) and a
//! later word has started after it, so a word still being spoken is never marked stable. The
//! stable prefix only grows; it is fed back to the decoder as a forced prefix, so later
//! hypotheses continue it instead of revising it.

/// Agreement state of one segment.
#[derive(Debug, Clone)]
pub struct Agreement {
    n: usize,
    history: Vec<Vec<u32>>,
    stable: Vec<u32>,
}

impl Agreement {
    /// `n` ≥ 1 hypotheses must agree (1 = every hypothesis is trusted).
    pub fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            history: Vec::new(),
            stable: Vec::new(),
        }
    }

    /// The agreed tokens.
    pub fn stable(&self) -> &[u32] {
        &self.stable
    }

    /// Makes `tokens` stable without agreement (they were shown long enough); ignored unless
    /// they extend the stable prefix.
    pub fn commit(&mut self, tokens: &[u32]) {
        if tokens.len() > self.stable.len() && tokens.starts_with(&self.stable) {
            self.stable = tokens.to_vec();
        }
    }

    /// Adds a hypothesis (text tokens) and extends the stable prefix where the last `n` agree.
    /// `starts_word(t)` says whether token `t` begins a new word.
    pub fn update(&mut self, hyp: &[u32], starts_word: impl Fn(u32) -> bool) {
        self.history.push(hyp.to_vec());
        if self.history.len() > self.n {
            self.history.remove(0);
        }
        if self.history.len() < self.n {
            return;
        }
        let mut common = self.history[0].len();
        for h in &self.history[1..] {
            common = common.min(h.len());
            common = self.history[0][..common]
                .iter()
                .zip(&h[..common])
                .take_while(|(a, b)| a == b)
                .count();
        }
        // only whole words followed by the start of another agreed word
        let cut = (1..common)
            .rev()
            .find(|&i| starts_word(self.history[0][i]))
            .unwrap_or(0);
        if cut > self.stable.len() && self.history[0][..self.stable.len()] == self.stable[..] {
            self.stable = self.history[0][..cut].to_vec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // tokens >= 100 start a word
    fn sw(t: u32) -> bool {
        t >= 100
    }

    #[test]
    fn stable_needs_agreement_and_a_following_word() {
        let mut a = Agreement::new(2);
        a.update(&[100, 1, 101, 102], sw);
        assert!(a.stable().is_empty(), "one hypothesis is not an agreement");
        a.update(&[100, 1, 101, 103], sw);
        assert_eq!(a.stable(), &[100, 1]);
        a.update(&[100, 1, 101, 103, 104], sw);
        assert_eq!(a.stable(), &[100, 1, 101]);
    }

    #[test]
    fn stable_never_shrinks() {
        let mut a = Agreement::new(2);
        a.update(&[100, 101, 102], sw);
        a.update(&[100, 101, 102], sw);
        assert_eq!(a.stable(), &[100, 101]);
        a.update(&[105, 106], sw);
        a.update(&[105, 106, 107], sw);
        assert_eq!(a.stable(), &[100, 101]);
    }

    #[test]
    fn commit_only_extends() {
        let mut a = Agreement::new(2);
        a.update(&[100, 101, 102], sw);
        a.update(&[100, 101, 102], sw);
        assert_eq!(a.stable(), &[100, 101]);
        a.commit(&[100]);
        assert_eq!(a.stable(), &[100, 101], "a shorter prefix changes nothing");
        a.commit(&[105, 101, 102]);
        assert_eq!(a.stable(), &[100, 101], "another prefix changes nothing");
        a.commit(&[100, 101, 102]);
        assert_eq!(a.stable(), &[100, 101, 102]);
        // agreement goes on from the committed prefix
        a.update(&[100, 101, 102, 103, 104], sw);
        a.update(&[100, 101, 102, 103, 104], sw);
        assert_eq!(a.stable(), &[100, 101, 102, 103]);
    }

    #[test]
    fn single_hypothesis_mode() {
        let mut a = Agreement::new(1);
        a.update(&[100, 101, 2, 102], sw);
        assert_eq!(a.stable(), &[100, 101, 2]);
    }
}
