//! Small statistics that read models answer from stored histograms.

use std::collections::BTreeMap;

/// The median of a histogram (value -> count): the values at ranks floor((n-1)/2) and
/// floor(n/2), averaged; `None` when the histogram is empty.
pub fn histogram_median(hist: &BTreeMap<u32, u64>) -> Option<f64> {
    let n: u64 = hist.values().sum();
    if n == 0 {
        return None;
    }
    let (lo_rank, hi_rank) = ((n - 1) / 2, n / 2);
    let (mut lo, mut hi, mut seen) = (None, None, 0u64);
    for (value, count) in hist {
        let next = seen + count;
        if lo.is_none() && lo_rank < next {
            lo = Some(*value);
        }
        if hi.is_none() && hi_rank < next {
            hi = Some(*value);
            break;
        }
        seen = next;
    }
    Some((f64::from(lo?) + f64::from(hi?)) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_histograms() {
        assert_eq!(histogram_median(&BTreeMap::new()), None);
        assert_eq!(histogram_median(&[(30, 1)].into()), Some(30.0));
        assert_eq!(histogram_median(&[(10, 1), (50, 1)].into()), Some(30.0));
        assert_eq!(histogram_median(&[(10, 2), (50, 1)].into()), Some(10.0));
        assert_eq!(histogram_median(&[(0, 1), (20, 2), (90, 1)].into()), Some(20.0));
        assert_eq!(histogram_median(&[(3, 1)].into()), Some(3.0));
        assert_eq!(histogram_median(&[(1, 1), (5, 1)].into()), Some(3.0));
        assert_eq!(histogram_median(&[(1, 2), (5, 1)].into()), Some(1.0));
        assert_eq!(histogram_median(&[(0, 1), (2, 2), (9, 1)].into()), Some(2.0));
    }
}
