//! Breadth-first growth within one CT slice, a limited number of 4-connected steps: the CT rules
//! (`border`, `opacity_edge`) both spread a mark from some pixels through others that qualify.

/// Grow from `seeds` through a slice of `len` pixels, `cols` to a row, at most `steps` steps.
/// `enter(from, to)` decides whether neighbour `to` of a reached pixel `from` joins, and marks it
/// so that it is not entered again; each joined pixel grows on in the next step.
pub fn in_slice(
    seeds: Vec<usize>,
    steps: usize,
    cols: usize,
    len: usize,
    mut enter: impl FnMut(usize, usize) -> bool,
) {
    let mut front = seeds;
    for _ in 0..steps {
        if front.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for &i in &front {
            for j in neighbours(i, cols, len).into_iter().flatten() {
                if enter(i, j) {
                    next.push(j);
                }
            }
        }
        front = next;
    }
}

/// The 4-connected neighbours of pixel `i`.
fn neighbours(i: usize, cols: usize, len: usize) -> [Option<usize>; 4] {
    let x = i % cols;
    [
        (x > 0).then(|| i - 1),
        (x + 1 < cols).then(|| i + 1),
        (i >= cols).then(|| i - cols),
        (i + cols < len).then(|| i + cols),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_steps_deep_in_four_directions_without_wrapping_rows() {
        // 3 rows of 4 from the pixel at row 1, column 0, two steps: the distance-2 diamond,
        // nothing taken from the end of the row above by wrapping round.
        let mut reached = [u8::MAX; 12];
        reached[4] = 0;
        in_slice(vec![4], 2, 4, 12, |from, to| {
            if reached[to] != u8::MAX {
                return false;
            }
            reached[to] = reached[from] + 1;
            true
        });
        #[rustfmt::skip]
        let want = [
            1, 2, u8::MAX, u8::MAX,
            0, 1, 2, u8::MAX,
            1, 2, u8::MAX, u8::MAX,
        ];
        assert_eq!(reached, want);
    }
}
