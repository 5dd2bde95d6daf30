//! Comparing embeddings: cosine similarity to a reference, and whether each sentence's nearest
//! neighbour stays the same.

/// The cosine of the angle between `a` and `b`, in `f64` (0 when either is zero).
#[must_use]
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// Per sentence, the cosine of its embedding in `test` to the one in `reference` (both
/// `count x dim`, row-major).
#[must_use]
pub fn cosines(reference: &[f32], test: &[f32], dim: usize) -> Vec<f64> {
    reference.chunks_exact(dim).zip(test.chunks_exact(dim)).map(|(a, b)| cosine(a, b)).collect()
}

/// For each sentence, the index of the most similar other sentence (cosine; the lower index
/// on a tie). `None` with fewer than two sentences.
#[must_use]
pub fn nearest(emb: &[f32], dim: usize) -> Option<Vec<usize>> {
    let rows: Vec<&[f32]> = emb.chunks_exact(dim).collect();
    if rows.len() < 2 {
        return None;
    }
    Some(
        (0..rows.len())
            .map(|i| {
                let mut best = (f64::NEG_INFINITY, 0);
                for (j, r) in rows.iter().enumerate() {
                    if j != i {
                        let c = cosine(rows[i], r);
                        if c > best.0 {
                            best = (c, j);
                        }
                    }
                }
                best.1
            })
            .collect(),
    )
}

/// The share of sentences whose nearest other sentence is the same in `test` as in
/// `reference` (1 with fewer than two sentences).
#[must_use]
pub fn neighbour_agreement(reference: &[f32], test: &[f32], dim: usize) -> f64 {
    match (nearest(reference, dim), nearest(test, dim)) {
        (Some(a), Some(b)) => {
            let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
            #[allow(clippy::cast_precision_loss, clippy::as_conversions)]
            {
                same as f64 / a.len() as f64
            }
        }
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 2.0]), 0.0);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-15);
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - core::f64::consts::FRAC_1_SQRT_2).abs() < 1e-15);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn neighbours_follow_the_closest_row() {
        // Rows 0 and 1 are close, 2 and 3 are close.
        let a = [1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9];
        assert_eq!(nearest(&a, 2), Some(vec![1, 0, 3, 2]));
        // Swapping which pairs are close halves... all four change.
        let b = [1.0, 0.0, 0.0, 1.0, 0.9, 0.1, 0.1, 0.9];
        assert_eq!(nearest(&b, 2), Some(vec![2, 3, 0, 1]));
        assert_eq!(neighbour_agreement(&a, &a, 2), 1.0);
        assert_eq!(neighbour_agreement(&a, &b, 2), 0.0);
    }
}
