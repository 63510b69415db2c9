//! L2-regularised logistic regression, the meta-labeler's model (docs/decisions.md "Meta-labeler").
//!
//! The objective is scikit-learn's `LogisticRegression(C=c)` divided by the number of rows:
//! `(Σ ℓ_i + ‖w‖² / (2C)) / n`, intercept last in the parameters and not penalised. It is solved
//! as scikit-learn's `newton-cholesky` solver does: Newton steps, the (d + 1)² Hessian factorised
//! by Cholesky, with a backtracking (Armijo) line search — for d = 10 one pass over the rows gives
//! the loss, the gradient and the Hessian, and a warm-started refit converges in two or three
//! passes where a first-order method needs ten or more. Should Newton fail (a Hessian that is not
//! positive definite in floating point, or no convergence), argmin's L-BFGS solves the same
//! objective from the same start.

use std::cell::RefCell;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

use crate::error::{Error, Result};

/// Newton stops once its step is below this (relative to 1 + ‖parameters‖∞): the error after that
/// step is of the order of its square. The same bound on the gradient ends it before a step.
const NEWTON_STEP_TOLERANCE: f64 = 1e-5;
const NEWTON_GRADIENT_TOLERANCE: f64 = 1e-12;
const NEWTON_MAX_ITERATIONS: u64 = 100;
/// Halvings of a Newton step before the line search gives up (and L-BFGS takes over).
const MAX_HALVINGS: u32 = 40;
/// Armijo's sufficient-decrease constant.
const ARMIJO: f64 = 1e-4;
/// Below this Newton decrement (−gradient · step, about twice the cost still to gain) full steps
/// are taken without a line search (the region of quadratic convergence).
const PURE_NEWTON_DECREMENT: f64 = 1e-4;

/// L-BFGS (the fallback) stops when the gradient norm of the (per-row) objective falls below this,
/// or when the objective changes by less than `TOLERANCE_COST` relative.
const TOLERANCE_GRAD: f64 = 1e-8;
const TOLERANCE_COST: f64 = 1e-13;
const MAX_ITERATIONS: u64 = 300;
/// Correction pairs kept by L-BFGS.
const LBFGS_MEMORY: usize = 10;

#[inline]
pub fn sigmoid(m: f64) -> f64 {
    if m >= 0.0 {
        1.0 / (1.0 + (-m).exp())
    } else {
        let e = m.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^m)` without overflow.
#[inline]
fn softplus(m: f64) -> f64 {
    m.max(0.0) + (-m.abs()).exp().ln_1p()
}

/// Coefficients of a logistic fit.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticFit {
    pub coef: Vec<f64>,
    pub intercept: f64,
    /// Newton iterations, or L-BFGS iterations when the fallback ran.
    pub iterations: u64,
    pub solver: Solver,
}

/// Which solver produced a fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Solver {
    Newton,
    /// The fallback, when Newton could not proceed.
    Lbfgs,
}

/// L2-regularised logistic regression of `y` (0/1) on the rows of `x` (row-major, `n × d`) with
/// inverse strength `c`, from zero. Deterministic: the same inputs give the same bits.
pub fn fit_logistic(x: &[f64], d: usize, y: &[f64], c: f64) -> Result<LogisticFit> {
    fit_logistic_from(x, d, y, c, None)
}

/// [`fit_logistic`] started from `init` (`d` coefficients then the intercept) instead of zero.
pub fn fit_logistic_from(x: &[f64], d: usize, y: &[f64], c: f64, init: Option<&[f64]>) -> Result<LogisticFit> {
    if d == 0 || y.is_empty() || x.len() != y.len() * d {
        return Err(Error::invalid(format!("fit_logistic: x has {} values, not {} rows × {d}", x.len(), y.len())));
    }
    fit_logistic_design(&design_of(x, d), d + 1, y, c, init)
}

/// Row-major `x` (n × d) with a 1 appended to each row: the design matrix of a fit.
fn design_of(x: &[f64], d: usize) -> Vec<f64> {
    x.chunks_exact(d).flat_map(|row| row.iter().copied().chain([1.0])).collect()
}

/// [`fit_logistic_from`] on a design matrix: row-major `n × k`, each row the `k − 1` features then
/// a 1 for the intercept (which is not penalised).
pub fn fit_logistic_design(design: &[f64], k: usize, y: &[f64], c: f64, init: Option<&[f64]>) -> Result<LogisticFit> {
    if k < 2 || y.is_empty() || design.len() != y.len() * k {
        return Err(Error::invalid(format!("fit_logistic: {} design values for {} rows × {k}", design.len(), y.len())));
    }
    if !(c > 0.0) || design.iter().chain(y).any(|v| !v.is_finite()) {
        return Err(Error::invalid("fit_logistic: c must be > 0 and x, y finite"));
    }
    let d = k - 1;
    let start = match init {
        Some(p) if p.len() == k && p.iter().all(|v| v.is_finite()) => p.to_vec(),
        _ => vec![0.0; k],
    };
    let problem = LogLoss { design, k, y, inverse_c: 1.0 / c };
    match newton(&problem, start.clone()) {
        Some((p, iterations)) => {
            Ok(LogisticFit { coef: p[..d].to_vec(), intercept: p[d], iterations, solver: Solver::Newton })
        }
        None => lbfgs(problem, start),
    }
}

/// The objective over a row-major design matrix (`k` columns, the last the intercept's ones).
#[derive(Clone, Copy)]
struct LogLoss<'a> {
    design: &'a [f64],
    k: usize,
    y: &'a [f64],
    inverse_c: f64,
}

/// The gradient and Hessian (row-major k × k, upper triangle filled) at one point, and the cost
/// when it was asked for (else NaN).
struct Quadratic {
    cost: f64,
    gradient: Vec<f64>,
    hessian: Vec<f64>,
}

/// One pass over the rows for `K` columns known at compile time (the loops unroll): sums of the
/// log-loss (`with_cost`), the residuals times the rows, and the curvature-weighted outer products.
fn pass<const K: usize>(design: &[f64], y: &[f64], p: &[f64], with_cost: bool) -> (f64, Vec<f64>, Vec<f64>) {
    let p: &[f64; K] = p.try_into().expect("K parameters");
    let (mut loss, mut gradient, mut hessian) = (0.0, [0.0; K], [[0.0; K]; K]);
    for (row, &y) in design.chunks_exact(K).zip(y) {
        let row: &[f64; K] = row.try_into().expect("rows of K");
        let m: f64 = (0..K).map(|j| row[j] * p[j]).sum();
        let e = (-m.abs()).exp();
        let prob = if m >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
        if with_cost {
            loss += m.max(0.0) + e.ln_1p() - y * m;
        }
        let (residual, weight) = (prob - y, prob * (1.0 - prob));
        for j in 0..K {
            gradient[j] += residual * row[j];
            let weighted = weight * row[j];
            for c in j..K {
                hessian[j][c] += weighted * row[c];
            }
        }
    }
    (loss, gradient.to_vec(), hessian.iter().flatten().copied().collect())
}

type Pass = fn(&[f64], &[f64], &[f64], bool) -> (f64, Vec<f64>, Vec<f64>);

/// The unrolled pass for `k` columns (2 to 16); wider problems go to L-BFGS.
fn pass_for(k: usize) -> Option<Pass> {
    macro_rules! widths {
        ($($k:literal)*) => { match k { $($k => Some(pass::<$k> as Pass),)* _ => None } };
    }
    widths!(2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
}

impl LogLoss<'_> {
    fn features(&self) -> usize {
        self.k - 1
    }

    /// The L2 penalty's share of the cost, its gradient added to `gradient`.
    fn penalise(&self, p: &[f64], gradient: &mut [f64]) -> f64 {
        let d = self.features();
        for (g, w) in gradient[..d].iter_mut().zip(&p[..d]) {
            *g += w * self.inverse_c;
        }
        0.5 * self.inverse_c * p[..d].iter().map(|w| w * w).sum::<f64>()
    }

    /// Cost and gradient (the L-BFGS fallback, any width).
    fn cost_and_gradient(&self, p: &[f64]) -> (f64, Vec<f64>) {
        let n = self.y.len() as f64;
        let mut gradient = vec![0.0; self.k];
        let mut loss = 0.0;
        for (row, y) in self.design.chunks_exact(self.k).zip(self.y) {
            let m: f64 = row.iter().zip(p).map(|(x, p)| x * p).sum();
            loss += softplus(m) - y * m;
            let residual = sigmoid(m) - y;
            gradient.iter_mut().zip(row).for_each(|(g, x)| *g += residual * x);
        }
        let penalty = self.penalise(p, &mut gradient);
        gradient.iter_mut().for_each(|g| *g /= n);
        ((loss + penalty) / n, gradient)
    }

    /// Gradient, Hessian and (`with_cost`) cost at `p` by `pass`.
    fn quadratic(&self, pass: Pass, p: &[f64], with_cost: bool) -> Quadratic {
        let n = self.y.len() as f64;
        let (loss, mut gradient, mut hessian) = pass(self.design, self.y, p, with_cost);
        let penalty = self.penalise(p, &mut gradient);
        gradient.iter_mut().for_each(|g| *g /= n);
        for j in 0..self.features() {
            hessian[j * self.k + j] += self.inverse_c;
        }
        hessian.iter_mut().for_each(|h| *h /= n);
        Quadratic { cost: if with_cost { (loss + penalty) / n } else { f64::NAN }, gradient, hessian }
    }
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |acc, x| acc.max(x.abs()))
}

/// Damped Newton from `start`: the parameters and the iterations, or `None` when it cannot proceed.
/// Full steps (no cost evaluated) once the Newton decrement is small; a backtracking line search
/// on the cost before.
fn newton(problem: &LogLoss<'_>, start: Vec<f64>) -> Option<(Vec<f64>, u64)> {
    let pass = pass_for(problem.k)?;
    let mut p = start;
    // With the cost: a first step usually needs the line search, which compares against it (one
    // pass fewer than computing it apart; the same sums, so the same bits).
    let mut here = problem.quadratic(pass, &p, true);
    for iteration in 0..NEWTON_MAX_ITERATIONS {
        if max_abs(&here.gradient) <= NEWTON_GRADIENT_TOLERANCE {
            return Some((p, iteration));
        }
        let mut step: Vec<f64> = here.gradient.iter().map(|g| -g).collect();
        solve_cholesky(&mut here.hessian, &mut step)?;
        if max_abs(&step) <= NEWTON_STEP_TOLERANCE * (1.0 + max_abs(&p)) {
            // Quadratic convergence: what is left after this step is of the order of its square.
            p.iter_mut().zip(&step).for_each(|(p, s)| *p += s);
            return Some((p, iteration + 1));
        }
        let slope: f64 = here.gradient.iter().zip(&step).map(|(g, s)| g * s).sum();
        if -slope < PURE_NEWTON_DECREMENT {
            // Close to the optimum the full step is safe, and the cost differences a line search
            // would compare are below the rounding of a sum over the rows.
            p.iter_mut().zip(&step).for_each(|(p, s)| *p += s);
            here = problem.quadratic(pass, &p, false);
            continue;
        }
        let cost = if here.cost.is_nan() { problem.quadratic(pass, &p, true).cost } else { here.cost };
        let mut t = 1.0;
        let mut accepted = None;
        for _ in 0..MAX_HALVINGS {
            let trial: Vec<f64> = p.iter().zip(&step).map(|(p, s)| p + t * s).collect();
            let there = problem.quadratic(pass, &trial, true);
            if there.cost <= cost + ARMIJO * t * slope {
                accepted = Some((trial, there));
                break;
            }
            t *= 0.5;
        }
        (p, here) = accepted?;
    }
    None
}

/// Solve `A x = b` in place for symmetric positive definite `A` given by its upper triangle
/// (row-major k × k, overwritten by the Cholesky factor); `None` when `A` is not positive definite.
fn solve_cholesky(a: &mut [f64], b: &mut [f64]) -> Option<()> {
    let k = b.len();
    // A = Uᵀ U with U upper triangular, stored over A's upper triangle.
    for i in 0..k {
        for j in i..k {
            let mut sum = a[i * k + j];
            for r in 0..i {
                sum -= a[r * k + i] * a[r * k + j];
            }
            if i == j {
                if !(sum > 0.0) {
                    return None;
                }
                a[i * k + i] = sum.sqrt();
            } else {
                a[i * k + j] = sum / a[i * k + i];
            }
        }
    }
    // Uᵀ y = b, then U x = y.
    for i in 0..k {
        let mut sum = b[i];
        for r in 0..i {
            sum -= a[r * k + i] * b[r];
        }
        b[i] = sum / a[i * k + i];
    }
    for i in (0..k).rev() {
        let mut sum = b[i];
        for c in i + 1..k {
            sum -= a[i * k + c] * b[c];
        }
        b[i] = sum / a[i * k + i];
    }
    b.iter().all(|v| v.is_finite()).then_some(())
}

/// argmin's L-BFGS on the same objective; cost and gradient are computed in one pass and kept for
/// the last parameters asked for (L-BFGS asks for both at every point).
fn lbfgs(problem: LogLoss<'_>, start: Vec<f64>) -> Result<LogisticFit> {
    let d = problem.features();
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), LBFGS_MEMORY)
        .with_tolerance_grad(TOLERANCE_GRAD)
        .and_then(|s| s.with_tolerance_cost(TOLERANCE_COST))
        .map_err(|err| Error::invalid(format!("fit_logistic: {err}")))?;
    let result = Executor::new(Cached { problem, last: RefCell::new(None) }, solver)
        .configure(|state| state.param(start).max_iters(MAX_ITERATIONS))
        .run()
        .map_err(|err| Error::invalid(format!("fit_logistic: L-BFGS failed: {err}")))?;
    let state = result.state();
    let best = state.get_best_param().or(state.get_param()).ok_or_else(|| Error::invalid("fit_logistic: no result"))?;
    Ok(LogisticFit {
        coef: best[..d].to_vec(),
        intercept: best[d],
        iterations: state.get_iter(),
        solver: Solver::Lbfgs,
    })
}

/// Parameters with the cost and gradient there.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

struct Cached<'a> {
    problem: LogLoss<'a>,
    last: RefCell<Option<Evaluation>>,
}

impl Cached<'_> {
    fn evaluate(&self, p: &[f64]) -> (f64, Vec<f64>) {
        if let Some((at, cost, gradient)) = self.last.borrow().as_ref() {
            if at.as_slice() == p {
                return (*cost, gradient.clone());
            }
        }
        let (cost, gradient) = self.problem.cost_and_gradient(p);
        *self.last.borrow_mut() = Some((p.to_vec(), cost, gradient.clone()));
        (cost, gradient)
    }
}

impl CostFunction for Cached<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, p: &Self::Param) -> std::result::Result<f64, argmin::core::Error> {
        Ok(self.evaluate(p).0)
    }
}

impl Gradient for Cached<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, p: &Self::Param) -> std::result::Result<Vec<f64>, argmin::core::Error> {
        Ok(self.evaluate(p).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planted(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = seed;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let d = 3;
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let row = [next() * 2.0 - 1.0, next() * 2.0 - 1.0, next() * 2.0 - 1.0];
            let p = sigmoid(3.0 * row[0] - 1.0 * row[1] + 0.5);
            y.push((next() < p) as u8 as f64);
            x.extend_from_slice(&row);
        }
        (x, y)
    }

    #[test]
    fn fit_is_deterministic_and_separates_a_planted_signal() {
        let (x, y) = planted(400, 12345);
        let a = fit_logistic(&x, 3, &y, 1.0).unwrap();
        let b = fit_logistic(&x, 3, &y, 1.0).unwrap();
        assert_eq!(a, b, "bit-identical refits");
        assert_eq!(a.solver, Solver::Newton);
        assert!(a.coef[0] > 1.5 && a.coef[1] < -0.3 && a.coef[2].abs() < 0.6, "{a:?}");
        // The gradient of the objective vanishes at the optimum.
        let design = design_of(&x, 3);
        let problem = LogLoss { design: &design, k: 4, y: &y, inverse_c: 1.0 };
        let mut p = a.coef.clone();
        p.push(a.intercept);
        let (_, g) = problem.cost_and_gradient(&p);
        assert!(g.iter().all(|g| g.abs() < 1e-10), "{g:?}");
    }

    #[test]
    fn newton_and_lbfgs_reach_the_same_optimum() {
        for (seed, c) in [(1u64, 1.0), (7, 0.05), (99, 50.0)] {
            let (x, y) = planted(300, seed);
            let design = design_of(&x, 3);
            let problem = LogLoss { design: &design, k: 4, y: &y, inverse_c: 1.0 / c };
            let (newton, iterations) = newton(&problem, vec![0.0; 4]).expect("newton converges");
            let lbfgs = lbfgs(problem, vec![0.0; 4]).unwrap();
            assert!(iterations < 20, "{iterations} Newton iterations");
            for (a, b) in newton[..3].iter().zip(&lbfgs.coef) {
                assert!((a - b).abs() < 1e-6, "c = {c}: {newton:?} vs {lbfgs:?}");
            }
            assert!((newton[3] - lbfgs.intercept).abs() < 1e-6);
        }
    }

    #[test]
    fn warm_start_converges_to_the_same_optimum() {
        let (x, y) = planted(500, 3);
        let cold = fit_logistic(&x, 3, &y, 1.0).unwrap();
        let mut init = cold.coef.clone();
        init.push(cold.intercept);
        init.iter_mut().for_each(|p| *p *= 1.05);
        let warm = fit_logistic_from(&x, 3, &y, 1.0, Some(&init)).unwrap();
        assert!(warm.iterations <= cold.iterations, "{} > {}", warm.iterations, cold.iterations);
        for (a, b) in warm.coef.iter().zip(&cold.coef) {
            assert!((a - b).abs() < 1e-9);
        }
    }

    #[test]
    fn many_rows_converge_by_newton_without_the_fallback() {
        // On many rows the cost differences near the optimum are below the rounding of the sum: the
        // line search must not be what decides convergence there.
        for n in [2_000, 20_000] {
            let (x, y) = planted(n, 11);
            let cold = fit_logistic(&x, 3, &y, 1.0).unwrap();
            assert_eq!(cold.solver, Solver::Newton, "n = {n}: {cold:?}");
            assert!(cold.iterations <= 10, "{cold:?}");
            let mut init = cold.coef.clone();
            init.push(cold.intercept);
            let warm = fit_logistic_from(&x[..(n - 10) * 3], 3, &y[..n - 10], 1.0, Some(&init)).unwrap();
            assert_eq!(warm.solver, Solver::Newton);
            assert!(warm.iterations <= 3, "a warm refit on nearly the same rows: {warm:?}");
        }
    }

    #[test]
    fn wide_problems_are_solved_by_lbfgs() {
        let (x, y) = planted(300, 5);
        // 20 features: the planted three and 17 copies of the first with noise-free shifts.
        let wide: Vec<f64> = x
            .chunks_exact(3)
            .flat_map(|row| (0..20).map(move |j| if j < 3 { row[j] } else { row[0] + j as f64 }))
            .collect();
        let fit = fit_logistic(&wide, 20, &y, 1.0).unwrap();
        assert_eq!(fit.solver, Solver::Lbfgs);
        let design = design_of(&wide, 20);
        let problem = LogLoss { design: &design, k: 21, y: &y, inverse_c: 1.0 };
        let mut p = fit.coef.clone();
        p.push(fit.intercept);
        assert!(problem.cost_and_gradient(&p).1.iter().all(|g| g.abs() < 1e-6));
    }

    #[test]
    fn separable_data_stays_finite() {
        // Perfectly separable: only the penalty keeps the coefficients finite.
        let x: Vec<f64> = (0..100).map(|i| i as f64 / 50.0 - 1.0).collect();
        let y: Vec<f64> = x.iter().map(|v| (*v > 0.0) as u8 as f64).collect();
        let fit = fit_logistic(&x, 1, &y, 1e4).unwrap();
        assert!(fit.coef[0].is_finite() && fit.coef[0] > 5.0, "{fit:?}");
    }

    #[test]
    fn cholesky_solves_and_rejects_indefinite() {
        // [[4, 2], [2, 3]] x = [2, 1] → x = [0.5, 0].
        let mut a = vec![4.0, 2.0, 0.0, 3.0];
        let mut b = vec![2.0, 1.0];
        solve_cholesky(&mut a, &mut b).unwrap();
        assert!((b[0] - 0.5).abs() < 1e-15 && b[1].abs() < 1e-15, "{b:?}");
        let mut indefinite = vec![1.0, 2.0, 0.0, 1.0];
        assert!(solve_cholesky(&mut indefinite, &mut [1.0, 1.0]).is_none());
    }

    #[test]
    fn fit_rejects_bad_shapes() {
        assert!(fit_logistic(&[1.0, 2.0, 3.0], 2, &[1.0, 0.0], 1.0).is_err());
        assert!(fit_logistic(&[1.0, 2.0], 1, &[1.0, 0.0], 0.0).is_err());
    }
}
