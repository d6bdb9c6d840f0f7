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

#[cfg(test)]
mod tests {
    use super::*;

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
