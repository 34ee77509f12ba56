//! Optimal one-to-one assignment (scipy's `linear_sum_assignment`, through the `lsap` port of
//! its solver), and ByteTrack's thresholded form of it.

use crate::error::{Result, TrackError};

/// Minimum-cost assignment of the rows of a row-major `rows`×`cols` matrix to its columns:
/// `min(rows, cols)` pairs `(row, col)`, in row order. `maximize` turns it into the
/// maximum-score assignment.
pub fn solve(rows: usize, cols: usize, cost: &[f64], maximize: bool) -> Result<Vec<(usize, usize)>> {
    debug_assert_eq!(cost.len(), rows * cols);
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    let (r, c) = lsap::solve(rows, cols, &cost.to_vec(), maximize).map_err(|source| TrackError::Assignment {
        rows,
        cols,
        source,
    })?;
    Ok(r.into_iter().zip(c).collect())
}

/// The pairs worth matching when leaving a row and a column unmatched costs `limit`
/// together: the optimal assignment on the matrix extended with unmatched slots at
/// `limit / 2` each (`lap.lapjv(cost, extend_cost=True, cost_limit=limit)`, which ByteTrack's
/// `linear_assignment(cost, thresh)` calls). A pair is kept only if its cost is under `limit`.
pub fn solve_with_limit(rows: usize, cols: usize, cost: &[f64], limit: f64) -> Result<Vec<(usize, usize)>> {
    debug_assert_eq!(cost.len(), rows * cols);
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    let n = rows + cols;
    let mut ext = vec![limit / 2.0; n * n];
    for i in rows..n {
        ext[i * n + cols..(i + 1) * n].fill(0.0);
    }
    for i in 0..rows {
        ext[i * n..i * n + cols].copy_from_slice(&cost[i * cols..(i + 1) * cols]);
    }
    let pairs = solve(n, n, &ext, false)?;
    Ok(pairs.into_iter().filter(|&(i, j)| i < rows && j < cols && cost[i * cols + j] < limit).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimal_not_greedy() {
        // Greedy takes (0,0)=1 then (1,1)=10: 11; optimal is (0,1)+(1,0) = 2+3 = 5.
        let cost = [1.0, 2.0, 3.0, 10.0];
        assert_eq!(solve(2, 2, &cost, false).unwrap(), vec![(0, 1), (1, 0)]);
        assert_eq!(solve(2, 2, &cost, true).unwrap(), vec![(0, 0), (1, 1)]);
        // Rectangular: one row, the cheapest column.
        assert_eq!(solve(1, 3, &[5.0, 1.0, 2.0], false).unwrap(), vec![(0, 1)]);
        assert!(solve(0, 3, &[], false).unwrap().is_empty());
        assert!(solve(2, 2, &[f64::NAN, 1.0, 1.0, 1.0], false).is_err());
    }

    #[test]
    fn limit_leaves_costly_pairs_unmatched() {
        // Row 1 only fits column 1 at 0.9, over the 0.8 limit: unmatched.
        let cost = [0.1, 0.95, 0.95, 0.9];
        assert_eq!(solve_with_limit(2, 2, &cost, 0.8).unwrap(), vec![(0, 0)]);
        // One pair at 0.1 with the other row and column unmatched (0.1 + 0.8) beats the
        // diagonal (1.4); with a cheaper diagonal (0.6) the diagonal wins.
        let cost = [0.7, 0.1, 0.9, 0.7];
        assert_eq!(solve_with_limit(2, 2, &cost, 0.8).unwrap(), vec![(0, 1)]);
        let cost = [0.3, 0.1, 0.9, 0.3];
        assert_eq!(solve_with_limit(2, 2, &cost, 0.8).unwrap(), vec![(0, 0), (1, 1)]);
        assert!(solve_with_limit(0, 4, &[], 0.8).unwrap().is_empty());
    }
}
