//! Online clustering of speaker embeddings (pure logic, no model).
//!
//! Each window embedding (unit length) is compared with every known centroid by cosine
//! similarity:
//! * at or above `new_speaker_similarity` of the nearest centroid → that speaker; its centroid
//!   moves towards the window (running mean of the unit embeddings);
//! * below it for every centroid → the window is *pending*. Only when `min_new_windows`
//!   consecutive pending windows agree with each other (pairwise similarity at or above the same
//!   threshold) is a new speaker created, seeded with them: one window straddling a speaker change
//!   or a cough does not create a speaker. While pending, a window is provisionally given its
//!   nearest speaker.
//! * once `max_speakers` exist, far windows go to the nearest speaker.
//!
//! Speaker ids are never merged, split or renumbered, so a label given to a final stays valid.

/// What the clusterer decided for one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No speaker yet (only before the first speaker exists).
    Undecided,
    /// The window belongs to this speaker.
    Speaker(usize),
    /// The window is far from every speaker; provisionally its nearest one.
    Pending(usize),
    /// A new speaker was created from the last `windows` windows (this one included).
    New { speaker: usize, windows: usize },
}

/// Parameters of [`OnlineClusters`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterParams {
    /// Cosine similarity under which a window is far from a speaker.
    pub new_speaker_similarity: f32,
    /// Most speakers created.
    pub max_speakers: usize,
    /// Consecutive agreeing far windows that create a speaker.
    pub min_new_windows: usize,
}

struct Cluster {
    sum: Vec<f32>,
    centroid: Vec<f32>,
    count: u32,
}

impl Cluster {
    fn new(members: &[Vec<f32>]) -> Self {
        let dim = members.first().map_or(0, Vec::len);
        let mut c = Cluster {
            sum: vec![0.0; dim],
            centroid: vec![0.0; dim],
            count: 0,
        };
        for m in members {
            c.add(m);
        }
        c
    }

    fn add(&mut self, e: &[f32]) {
        for (s, x) in self.sum.iter_mut().zip(e) {
            *s += x;
        }
        self.count += 1;
        self.centroid.copy_from_slice(&self.sum);
        super::embedder::normalise(&mut self.centroid);
    }
}

/// Online speaker clusters of one track.
pub struct OnlineClusters {
    params: ClusterParams,
    clusters: Vec<Cluster>,
    pending: Vec<Vec<f32>>,
}

impl OnlineClusters {
    /// No speakers yet.
    pub fn new(params: ClusterParams) -> Self {
        Self {
            params,
            clusters: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Number of speakers created.
    pub fn speakers(&self) -> usize {
        self.clusters.len()
    }

    /// Windows assigned to `speaker` so far.
    pub fn count(&self, speaker: usize) -> u32 {
        self.clusters.get(speaker).map_or(0, |c| c.count)
    }

    /// Nearest speaker of `e` and its similarity.
    pub fn nearest(&self, e: &[f32]) -> Option<(usize, f32)> {
        self.clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (i, dot(&c.centroid, e)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Assigns the next window's unit embedding `e`.
    pub fn push(&mut self, e: &[f32]) -> Decision {
        let p = self.params;
        let Some((best, sim)) = self.nearest(e) else {
            self.pending.push(e.to_vec());
            return self.try_create().unwrap_or(Decision::Undecided);
        };
        if sim >= p.new_speaker_similarity || self.clusters.len() >= p.max_speakers {
            self.pending.clear();
            self.clusters[best].add(e);
            return Decision::Speaker(best);
        }
        // far from every speaker: keep only the pending windows this one agrees with
        if self
            .pending
            .iter()
            .any(|q| dot(q, e) < p.new_speaker_similarity)
        {
            self.pending.clear();
        }
        self.pending.push(e.to_vec());
        self.try_create().unwrap_or(Decision::Pending(best))
    }

    fn try_create(&mut self) -> Option<Decision> {
        let need = if self.clusters.is_empty() {
            1
        } else {
            self.params.min_new_windows.max(1)
        };
        if self.pending.len() < need {
            return None;
        }
        let windows = self.pending.len();
        self.clusters.push(Cluster::new(&self.pending));
        self.pending.clear();
        Some(Decision::New {
            speaker: self.clusters.len() - 1,
            windows,
        })
    }
}

/// Dot product (cosine similarity of unit vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: ClusterParams = ClusterParams {
        new_speaker_similarity: 0.5,
        max_speakers: 4,
        min_new_windows: 2,
    };

    /// A unit vector near axis `k` of dimension 8, tilted by `noise` towards axis `j`.
    fn v(k: usize, j: usize, noise: f32) -> Vec<f32> {
        let mut x = vec![0.0f32; 8];
        x[k] = 1.0;
        x[j] += noise;
        crate::diarize::embedder::normalise(&mut x);
        x
    }

    #[test]
    fn first_window_creates_the_first_speaker() {
        let mut c = OnlineClusters::new(PARAMS);
        assert_eq!(
            c.push(&v(0, 1, 0.1)),
            Decision::New {
                speaker: 0,
                windows: 1
            }
        );
        assert_eq!(c.push(&v(0, 2, 0.2)), Decision::Speaker(0));
        assert_eq!(c.speakers(), 1);
    }

    #[test]
    fn a_new_speaker_needs_agreeing_far_windows() {
        let mut c = OnlineClusters::new(PARAMS);
        c.push(&v(0, 1, 0.1));
        // one far window: pending, provisionally speaker 0
        assert_eq!(c.push(&v(3, 1, 0.1)), Decision::Pending(0));
        // a far window that disagrees with the pending one restarts the count
        assert_eq!(c.push(&v(5, 1, 0.1)), Decision::Pending(0));
        assert_eq!(
            c.push(&v(5, 2, 0.2)),
            Decision::New {
                speaker: 1,
                windows: 2
            }
        );
        assert_eq!(c.push(&v(0, 2, 0.3)), Decision::Speaker(0));
        assert_eq!(c.push(&v(5, 3, 0.3)), Decision::Speaker(1));
        assert_eq!(c.speakers(), 2);
    }

    #[test]
    fn a_lone_far_window_creates_nothing() {
        let mut c = OnlineClusters::new(PARAMS);
        c.push(&v(0, 1, 0.1));
        assert_eq!(c.push(&v(4, 1, 0.1)), Decision::Pending(0));
        assert_eq!(c.push(&v(0, 1, 0.2)), Decision::Speaker(0));
        assert_eq!(c.push(&v(4, 1, 0.1)), Decision::Pending(0));
        assert_eq!(c.speakers(), 1);
    }

    #[test]
    fn max_speakers_bounds_creation() {
        let mut c = OnlineClusters::new(ClusterParams {
            max_speakers: 2,
            ..PARAMS
        });
        c.push(&v(0, 1, 0.0));
        c.push(&v(1, 0, 0.0));
        c.push(&v(1, 0, 0.0));
        assert_eq!(c.speakers(), 2);
        for _ in 0..5 {
            assert!(matches!(c.push(&v(2, 0, 0.1)), Decision::Speaker(0)));
        }
        assert_eq!(c.speakers(), 2);
    }

    #[test]
    fn centroids_follow_their_members() {
        let mut c = OnlineClusters::new(PARAMS);
        c.push(&v(0, 1, 0.0));
        for _ in 0..10 {
            c.push(&v(0, 1, 0.6));
        }
        let (s, sim) = c.nearest(&v(0, 1, 0.6)).unwrap();
        assert_eq!(s, 0);
        assert!(sim > 0.99, "{sim}");
        assert_eq!(c.count(0), 11);
    }
}
