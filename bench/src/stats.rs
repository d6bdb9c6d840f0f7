//! Medians and tails of timing samples, in microseconds.

/// The middle and the tail of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub samples: usize,
}

/// Median, 90th and 99th percentile (nearest rank) of `samples`.
pub fn summarize(mut samples: Vec<f64>) -> Summary {
    samples.sort_by(f64::total_cmp);
    let at = |fraction: f64| {
        let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
        samples.get(index.min(samples.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
    };
    Summary { median: at(0.5), p90: at(0.9), p99: at(0.99), samples: samples.len() }
}

/// Rounds of a noisy measurement, as reported: the median round and the range.
#[derive(Debug, Clone)]
pub struct Rounds<T> {
    pub median: T,
    /// The median round's key.
    pub middle: f64,
    pub lowest: f64,
    pub highest: f64,
    pub count: usize,
}

/// The round with the median `key`, and the lowest and highest `key`; `None` without rounds.
pub fn median_round<T>(mut rounds: Vec<T>, key: impl Fn(&T) -> f64) -> Option<Rounds<T>> {
    rounds.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let (lowest, highest, count) = (key(rounds.first()?), key(rounds.last()?), rounds.len());
    let median = rounds.swap_remove(count / 2);
    Some(Rounds { middle: key(&median), median, lowest, highest, count })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_round_and_the_range() {
        let rounds = median_round(vec![3.0, 9.0, 1.0, 7.0, 5.0], |x| *x).expect("rounds");
        assert_eq!(
            (rounds.median, rounds.middle, rounds.lowest, rounds.highest, rounds.count),
            (5.0, 5.0, 1.0, 9.0, 5)
        );
        assert!(median_round(Vec::<f64>::new(), |x| *x).is_none());
    }

    #[test]
    fn median_and_p99_by_nearest_rank() {
        let summary = summarize((1..=101).rev().map(f64::from).collect());
        assert_eq!((summary.median, summary.p90, summary.p99, summary.samples), (51.0, 91.0, 100.0, 101));
    }

    #[test]
    fn no_samples_give_nan() {
        assert!(summarize(Vec::new()).median.is_nan());
    }
}
