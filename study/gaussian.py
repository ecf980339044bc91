"""The Gaussian model of robust and non-robust features (Ilyas et al. 2019, Section 4).

y is uniform in {-1, +1} and x ~ N(y mu*, Sigma*) in R^d. A model is theta = (mu, Sigma) with
the loss l(x; y mu, Sigma) = 1/2 (x - y mu)^T Sigma^-1 (x - y mu) + 1/2 log det Sigma (the
Gaussian negative log-likelihood without its constant).

- ``standard_mle``: mu = mean(y x), Sigma = S = mean (x - y mu)(x - y mu)^T (closed form).
- ``robust_mle``: min over theta of mean_i max_{||delta||_2 <= eps} l(x_i + delta; y_i mu, Sigma).
  The inner maximum of the convex quadratic lies on the sphere at delta = (eta I - A)^-1 A v
  (A = Sigma^-1, v = x - y mu, eta > lambda_max(A) set by ||delta|| = eps: Newton's method on
  the secular equation in A's eigenbasis, batched over the samples; ``ball_adversary``). The
  outer problem is Adam on mu and a Cholesky factor of Sigma with a log diagonal, in float64,
  with the gradient taken at the detached maximiser (Danskin's theorem).
- ``penalised_mle``: the same with the Lagrangian adversary max_delta l(x + delta) - lam/2
  ||delta||^2, whose maximiser is delta = (lam I - A)^-1 A v for lam > lambda_max(A); Sigma is
  parameterised as I / lam + L L^T so that the inner maximum stays finite.
- ``theorem2``: the paper's Theorem 2, Sigma_r = 1/2 S + I / lam + (S / lam + S^2 / 4)^(1/2),
  applied to the sample covariance S. It is the exact minimiser of the penalised problem
  (eigenvalue by eigenvalue, (s - 1/lam)^2 = sigma s); ``penalised_residual`` checks that on
  the numerical solution. For the eps-ball adversary each sample has its own multiplier eta_i,
  so Theorem 2 can only hold approximately: ``fit_lambda`` finds the one lam whose formula is
  closest to the numerical Sigma_r and reports the relative residual.

``evaluate(axes, seed)`` returns the ``gaussian`` artifact table: one row per eps of
``axes.eps`` (eps 0 is the standard MLE), fitted on one sample of ``axes.n`` points drawn from
N(y axes.mean, axes.cov). Columns:

- ``eps`` (L2 radius of the adversary), ``d``, ``n``, ``steps``, ``lr``: the setting.
- ``lam``: the fitted Theorem 2 multiplier (null at eps 0, where Theorem 2 holds with 1/lam = 0).
- ``theorem2_residual``: ||theorem2(S, lam) - Sigma_r||_F / ||Sigma_r||_F at that lam (0 at eps 0).
- ``penalised_residual``: the same distance between the numerical penalised MLE at that lam and
  theorem2(S, lam): how well the closed form and the optimiser agree (0 at eps 0).
- ``stationarity``: ||Sigma_r - mean (v + delta*)(v + delta*)^T||_F / ||Sigma_r||_F, the first-order
  (Danskin) condition of the robust problem at the returned Sigma_r: how converged the fit is.
- ``identity_weight``: w of the least-squares fit Sigma_r / tr Sigma_r ~ (1 - w) S / tr S + w I / d
  (0: the sample covariance's shape, 1: a circle).
- ``anisotropy``: largest / smallest eigenvalue of Sigma_r (``std_anisotropy``: of S;
  ``true_anisotropy``: of Sigma*).
- ``mu_error``: ||mu_r - mu*||_2 (sampling error included); ``mu_shift``: ||mu_r - mu_std||_2,
  the robust fit's own move away from the standard MLE.
- ``robust_loss``: the robust objective at (mu_r, Sigma_r).
- ``mu_0``, ``mu_1``, ``sigma_00``, ``sigma_01``, ``sigma_11``: the robust fit's first two
  coordinates; ``std_``-prefixed: the standard MLE's; ``true_``-prefixed: the model's.
- ``eig_robust``, ``eig_theorem2``, ``eig_std``: the ascending eigenvalues of Sigma_r, of
  theorem2(S, lam) and of S (list columns).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from study.seeds import stream_seed

STEPS = 300
LR = 0.1
NEWTON_STEPS = 60  # the most Newton steps of the ball adversary's secular equation (it stops once solved)
LAM_RANGE = (-12.0, 12.0)  # the search range of log(lam * tr(S) / d): lam relative to S's scale


def sample(n: int, mean, cov, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n draws of (x, y): y uniform in {-1, +1}, x ~ N(y mean, cov); float64 (n, d) and (n,)."""
    rng = np.random.default_rng(seed)
    mean, cov = np.asarray(mean, dtype=np.float64), np.asarray(cov, dtype=np.float64)
    y = rng.choice(np.array([-1.0, 1.0]), size=n)
    x = y[:, None] * mean + rng.standard_normal((n, len(mean))) @ np.linalg.cholesky(cov).T
    return x, y


def standard_mle(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The maximum-likelihood (mu, Sigma): the mean of y x and the covariance of x - y mu."""
    mu = (y[:, None] * x).mean(0)
    v = x - y[:, None] * mu
    return mu, v.T @ v / len(x)


# -- the adversaries -------------------------------------------------------------------------


def ball_adversary(v: np.ndarray, sigma: np.ndarray, eps: float) -> np.ndarray:
    """argmax over ||delta||_2 <= eps of (v + delta)^T Sigma^-1 (v + delta), per row of v.

    The maximiser is on the sphere: delta = (eta I - A)^-1 A v, A = Sigma^-1, with eta >
    lambda_max(A) the root of ||delta(eta)|| = eps. In A's eigenbasis that is a secular
    equation: 1/||delta|| is concave and increasing in eta, so Newton's method started at a
    lower bound of the root rises to it monotonically (as in More & Sorensen's trust region).
    When v has no component along A's top eigenvector the root may not exist (the "hard
    case"): the top coordinate of delta then fills the sphere; in the ordinary case that only
    corrects the last digits."""
    s, q = np.linalg.eigh(sigma)
    a = 1.0 / s
    top = int(np.argmax(a))
    w = v @ q
    aw2 = (a * w) ** 2
    ones = np.ones(len(a))  # row sums as products: numpy's sum over a short last axis is slow
    # the gap g = eta - a_top: ||delta|| >= a_top |w_top| / g bounds the root from below
    floor = np.maximum(a[top] * np.abs(w[:, top]) / eps, a[top] * 1e-90)
    gap = floor.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(NEWTON_STEPS):
            d = gap[:, None] + (a[top] - a)
            terms = aw2 / (d * d)
            norm2 = terms @ ones
            norm = np.sqrt(norm2)
            phi = 1.0 / norm - 1.0 / eps
            if np.all((np.abs(phi) * eps < 1e-13) | ((phi > 0) & (gap <= floor))):
                break
            slope = ((terms / d) @ ones) / (norm2 * norm)  # d phi / d eta
            gap = np.fmax(gap - phi / slope, floor)  # fmax: a zero row's nan step stays at the floor
    delta = a * w / (gap[:, None] + (a[top] - a))
    rest = delta**2 @ ones - delta[:, top] ** 2
    delta[:, top] = np.where(w[:, top] < 0, -1.0, 1.0) * np.sqrt(np.clip(eps**2 - rest, 0.0, None))
    return delta @ q.T


def penalty_adversary(v: np.ndarray, sigma: np.ndarray, lam: float) -> np.ndarray:
    """argmax over delta of 1/2 (v + delta)^T A (v + delta) - lam/2 ||delta||^2, A = Sigma^-1,
    per row of v: delta = (lam I - A)^-1 A v (the objective is concave for lam > lambda_max(A))."""
    s, q = np.linalg.eigh(sigma)
    a = 1.0 / s
    return (a * (v @ q) / (lam - a)) @ q.T


# -- the fits --------------------------------------------------------------------------------
#
# Both adversaries are odd in v (delta(-v) = -delta(v)) and v = x - y mu = y (y x - mu), so the
# loss at the perturbed points only depends on z = y x + delta(y x - mu): it is the Gaussian
# NLL of z around mu, 1/2 tr(Sigma^-1 M) + 1/2 log det Sigma with M = C + (m - mu)(m - mu)^T
# (m, C: the mean and covariance of z). Each step computes delta in numpy and differentiates
# that d x d expression in torch: Danskin's gradient, with delta held fixed.


def _moments(z: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    m = z.mean(0)
    return torch.from_numpy(m), torch.from_numpy((z - m).T @ (z - m) / len(z))


def _nll(mu: torch.Tensor, sigma: torch.Tensor, m: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian NLL (no constant) of points with mean m and covariance cov under N(mu, sigma)."""
    gap = (m - mu)[:, None]
    return 0.5 * torch.trace(torch.linalg.solve(sigma, cov + gap @ gap.T)) + 0.5 * torch.logdet(sigma)


def _tril(raw: torch.Tensor) -> torch.Tensor:
    """A lower-triangular factor from unconstrained entries: the diagonal is exp(raw's diagonal)."""
    return torch.tril(raw, -1) + torch.diag(torch.exp(torch.diagonal(raw)))


def _raw(chol: np.ndarray) -> torch.Tensor:
    """The unconstrained entries of a Cholesky factor (inverse of ``_tril``)."""
    raw = np.tril(chol, -1) + np.diag(np.log(np.diag(chol)))
    return torch.tensor(raw, dtype=torch.float64, requires_grad=True)


@contextlib.contextmanager
def _one_thread():
    """Torch on one thread: its ops here are on d x d matrices, and waking a thread pool for each
    of them costs milliseconds on a busy machine (it made a fit ten times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit(x: np.ndarray, y: np.ndarray, adversary, start: np.ndarray, floor: float, steps: int, lr: float) -> tuple[np.ndarray, np.ndarray]:
    """Adam (cosine-decayed learning rate, so the last steps settle) on mu and Sigma = floor I +
    L L^T, against ``adversary(v, sigma) -> delta``; mu starts at the standard MLE's, L L^T at
    ``start``."""
    z0 = y[:, None] * x
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    mu = torch.tensor(z0.mean(0), requires_grad=True)
    raw = _raw(np.linalg.cholesky(start))
    opt = torch.optim.Adam([mu, raw], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    with _one_thread():
        for _ in range(steps):
            low = _tril(raw)
            sigma = floor * eye + low @ low.T
            r = z0 - mu.detach().numpy()
            m, cov = _moments(z0 + adversary(r, sigma.detach().numpy()))
            opt.zero_grad()
            _nll(mu, sigma, m, cov).backward()
            opt.step()
            sched.step()
    low = _tril(raw).detach()
    return mu.detach().numpy().copy(), (floor * eye + low @ low.T).numpy()


def robust_mle(x: np.ndarray, y: np.ndarray, eps: float, steps: int = STEPS, lr: float = LR) -> tuple[np.ndarray, np.ndarray]:
    """(mu, Sigma) minimising the mean over samples of the worst loss within the L2 ball of
    radius eps; eps 0 returns the standard MLE. Sigma starts at the second moment of the
    residuals pushed radially out by eps (the adversary's points against an isotropic Sigma):
    the right scale, so large eps converge in a few hundred steps (from S they did not)."""
    mu, S = standard_mle(x, y)
    if eps == 0:
        return mu, S
    v = y[:, None] * x - mu
    u = v * (1 + eps / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-300))
    return _fit(x, y, lambda v, sigma: ball_adversary(v, sigma, eps), u.T @ u / len(u), 0.0, steps, lr)


def penalised_mle(x: np.ndarray, y: np.ndarray, lam: float, steps: int = STEPS, lr: float = LR) -> tuple[np.ndarray, np.ndarray]:
    """(mu, Sigma) minimising the mean of max_delta l(x + delta) - lam/2 ||delta||^2, with
    Sigma = I / lam + L L^T so that the inner maximum stays finite (L L^T starts at S)."""
    return _fit(x, y, lambda v, sigma: penalty_adversary(v, sigma, lam), standard_mle(x, y)[1], 1.0 / lam, steps, lr)


def _perturbed(x: np.ndarray, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, eps: float) -> np.ndarray:
    """z = y x + delta*: the eps-ball adversary's points, folded onto the +1 class."""
    r = y[:, None] * x - mu
    return r + mu + (ball_adversary(r, sigma, eps) if eps > 0 else 0.0)


def robust_loss(x: np.ndarray, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, eps: float) -> float:
    """The eps-ball robust objective mean_i max_delta l(x_i + delta; y_i mu, Sigma) (eps 0: the NLL)."""
    m, cov = _moments(_perturbed(x, y, mu, sigma, eps))
    return float(_nll(torch.from_numpy(np.asarray(mu, dtype=np.float64)), torch.from_numpy(sigma), m, cov))


def stationarity(x: np.ndarray, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, eps: float) -> float:
    """||Sigma - mean u u^T||_F / ||Sigma||_F with u = v + delta*(Sigma): zero exactly where the
    Danskin gradient of the robust objective in Sigma vanishes."""
    u = _perturbed(x, y, mu, sigma, eps) - mu
    return float(np.linalg.norm(sigma - u.T @ u / len(u)) / np.linalg.norm(sigma))


# -- Theorem 2 and the blend toward the identity ----------------------------------------------


def theorem2(S: np.ndarray, lam: float) -> np.ndarray:
    """Theorem 2's robust covariance 1/2 S + I / lam + (S / lam + S^2 / 4)^(1/2) (S symmetric PSD)."""
    sigma, q = np.linalg.eigh(S)
    sigma = sigma.clip(0.0)
    s = 1.0 / lam + sigma / 2 + np.sqrt(sigma / lam + sigma**2 / 4)
    return (q * s) @ q.T


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def fit_lambda(sigma_r: np.ndarray, S: np.ndarray) -> tuple[float, float]:
    """(lam, residual): the lam whose theorem2(S, lam) is closest to sigma_r in Frobenius norm
    (a grid over log lam, refined by a bounded Brent search around its best point), and
    ||theorem2(S, lam) - sigma_r||_F / ||sigma_r||_F."""
    scale = math.log(len(S) / np.trace(S))

    def error(t: float) -> float:
        return float(np.linalg.norm(theorem2(S, math.exp(scale + t)) - sigma_r))

    grid = np.linspace(*LAM_RANGE, 97)
    best = int(np.argmin([error(t) for t in grid]))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    t = minimize_scalar(error, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10}).x
    lam = math.exp(scale + t)
    return lam, _relative(theorem2(S, lam), sigma_r)


def identity_weight(sigma_r: np.ndarray, S: np.ndarray) -> float:
    """w of the least-squares fit sigma_r / tr sigma_r ~ (1 - w) S / tr S + w I / d."""
    d = len(S)
    shape, start, eye = sigma_r / np.trace(sigma_r), S / np.trace(S), np.eye(d) / d
    return float(np.sum((shape - start) * (eye - start)) / np.sum((eye - start) ** 2))


def anisotropy(sigma: np.ndarray) -> float:
    """Largest over smallest eigenvalue."""
    e = np.linalg.eigvalsh(sigma)
    return float(e[-1] / e[0])


# -- the artifact ----------------------------------------------------------------------------


def _entries(prefix: str, mu: np.ndarray, sigma: np.ndarray) -> dict:
    """The first two coordinates of (mu, Sigma) as columns: the charts draw that plane."""
    return {
        f"{prefix}mu_0": float(mu[0]), f"{prefix}mu_1": float(mu[1]),
        f"{prefix}sigma_00": float(sigma[0, 0]), f"{prefix}sigma_01": float(sigma[0, 1]), f"{prefix}sigma_11": float(sigma[1, 1]),
    }


def _row(x: np.ndarray, y: np.ndarray, eps: float, axes, true_mu: np.ndarray, true_cov: np.ndarray) -> dict:
    mu_s, S = standard_mle(x, y)
    mu, sigma = robust_mle(x, y, eps, steps=axes.steps, lr=axes.lr)
    if eps == 0:
        lam, residual, t2, penalised = None, 0.0, S, 0.0
    else:
        lam, residual = fit_lambda(sigma, S)
        t2 = theorem2(S, lam)
        penalised = _relative(penalised_mle(x, y, lam, steps=axes.steps, lr=axes.lr)[1], t2)
    return {
        "eps": float(eps), "d": x.shape[1], "n": len(x), "steps": int(axes.steps), "lr": float(axes.lr),
        "lam": lam, "theorem2_residual": residual, "penalised_residual": penalised,
        "stationarity": stationarity(x, y, mu, sigma, eps),
        "identity_weight": identity_weight(sigma, S), "anisotropy": anisotropy(sigma),
        "std_anisotropy": anisotropy(S), "true_anisotropy": anisotropy(true_cov),
        "mu_error": float(np.linalg.norm(mu - true_mu)), "mu_shift": float(np.linalg.norm(mu - mu_s)),
        "robust_loss": robust_loss(x, y, mu, sigma, eps),
        **_entries("", mu, sigma), **_entries("std_", mu_s, S), **_entries("true_", true_mu, true_cov),
        "eig_robust": np.linalg.eigvalsh(sigma).tolist(), "eig_theorem2": np.linalg.eigvalsh(t2).tolist(),
        "eig_std": np.linalg.eigvalsh(S).tolist(),
    }


def evaluate(axes, seed: int) -> dict[str, list]:
    """The ``gaussian`` artifact (columns in the module docstring): one row per eps of
    ``axes.eps``, every fit on the same sample of ``axes.n`` points (drawn with the stream
    ``stream_seed(seed, "gaussian")``)."""
    true_mu, true_cov = np.asarray(axes.mean, dtype=np.float64), np.asarray(axes.cov, dtype=np.float64)
    if len(true_mu) < 2 or true_cov.shape != (len(true_mu), len(true_mu)):
        raise ValueError(f"gaussian: mean must have d >= 2 entries and cov be d x d, got {len(true_mu)} and {true_cov.shape}")
    x, y = sample(axes.n, true_mu, true_cov, stream_seed(seed, "gaussian"))
    rows = [_row(x, y, float(eps), axes, true_mu, true_cov) for eps in axes.eps]
    return {key: [row[key] for row in rows] for key in rows[0]}
