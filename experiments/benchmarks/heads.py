"""Heads on offline data, side by side with their peers: anomaly AUROC, denoising PSNR, generation
MMD, and a trained SQL agent's energy as an anomaly score.

    python experiments/benchmarks/heads.py            # full run (about 30 min on 1 thread)
    python experiments/benchmarks/heads.py --quick    # smoke run (about 2 min)
    python experiments/benchmarks/heads.py --rl-only  # rerun the RL case (3 agents) into the saved .json
    python experiments/benchmarks/heads.py --generation-only  # rerun generation into the saved .json

Writes experiments/results/heads.{json,md} and heads_*.png (``--quick``: heads_quick.*).
Hyperparameters are fixed once for all tasks and seeds; no test label is used for any choice.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ebrl import Energy
from ebrl.gaussian import GaussianResidualEnergy
from ebrl.heads import AnomalyScorer, Denoiser, KernelDensityEnergy, annealed_langevin
from ebrl.training import DenoisingScoreMatching, WeightAverage, fit

RESULTS = Path(__file__).resolve().parents[1] / "results"
SIGMAS_DENOISE = (0.1, 0.2, 0.3, 0.5)


def at_sigma(energy: Energy, sigma: float, label: Tensor | None = None) -> Callable[[Tensor], Tensor]:
    """x -> E(x | [label,] log sigma): the energy at one noise level as a plain callable."""

    def fn(x: Tensor) -> Tensor:
        ls = torch.full((*x.shape[:-1], 1), math.log(sigma))
        ctx = ls if label is None else torch.cat([label.expand(*x.shape[:-1], label.shape[-1]), ls], -1)
        return energy.energy(x, ctx)

    return fn


# ---------------------------------------------------------------- anomaly detection (AUROC)
def anomaly_task(name: str, seed: int, digit: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ODDS-style split: train on 60 % of the normal class, test on the rest plus the anomalies."""
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    rng = np.random.default_rng(seed)
    if name == "breast_cancer":
        x, y = load_breast_cancer(return_X_y=True)
        normal, anomalies, k = x[y == 1], x[y == 0], 21
    elif name == "wine":
        x, y = load_wine(return_X_y=True)
        normal, anomalies, k = x[y != 0], x[y == 0], 10
    elif name == "digits_vs_zeros":
        x, y = load_digits(return_X_y=True)
        normal, anomalies = x[y != 0], x[y == 0]
        k = round(0.03 * len(normal))
    else:  # one-class digits: normal = one digit, anomalies = held-out 40 % of every other digit
        x, y = load_digits(return_X_y=True)
        normal, others = x[y == digit], x[y != digit]
        anomalies, k = others, int(0.4 * len(others))
    anomalies = anomalies[rng.choice(len(anomalies), k, replace=False)]
    perm = rng.permutation(len(normal))
    n_train = int(0.6 * len(normal))
    train, test_normal = normal[perm[:n_train]], normal[perm[n_train:]]
    test = np.vstack([test_normal, anomalies])
    return train, test, np.r_[np.zeros(len(test_normal)), np.ones(len(anomalies))]


def anomaly_scores(train: np.ndarray, test: np.ndarray, seed: int, steps: int) -> dict[str, np.ndarray]:
    """Scores (higher = more anomalous) of every method on standardised features."""
    from sklearn.covariance import LedoitWolf
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.svm import OneClassSVM

    mu, sd = train.mean(0), train.std(0)
    sd[sd < 1e-8] = 1.0  # constant pixels of digits
    a, b = (train - mu) / sd, (test - mu) / sd
    lw = LedoitWolf().fit(a)
    out = {
        "IsolationForest": -IsolationForest(random_state=seed).fit(a).score_samples(b),
        "LocalOutlierFactor": -LocalOutlierFactor(novelty=True).fit(a).score_samples(b),
        "OneClassSVM": -OneClassSVM(gamma="scale", nu=0.1).fit(a).score_samples(b),
        "Gaussian (Ledoit-Wolf)": lw.mahalanobis(b),
    }
    torch.manual_seed(seed)
    sigmas = (0.5, 1.0, 2.0)
    energy = GaussianResidualEnergy(lw.location_[None], lw.covariance_[None], (128, 128))
    fit(energy, torch.tensor(a, dtype=torch.float32), DenoisingScoreMatching(sigmas, noise_conditional=True),
        n_steps=steps, lr=1e-3, weight_decay=1e-4, generator=torch.Generator().manual_seed(seed))
    # Multi-scale score: the mean energy over the noise levels (an ensemble of the smoothed
    # densities; each level's unknown constant shifts every score alike).
    scorer = AnomalyScorer([at_sigma(energy, s) for s in sigmas])
    out["EBM (DSM, residual)"] = scorer.score(torch.tensor(b, dtype=torch.float32)).numpy()
    # Kernel density energies on the standardised features (Sigma = I): the bandwidth h is the
    # one of largest leave-one-out log-likelihood of the training inliers (no outlier, no test
    # point, no label); KDE_SCALES = (1, 2) averages the energies at h and 2h.
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    kde = KernelDensityEnergy(ta, metric="identity", generator=torch.Generator().manual_seed(seed))
    out[KDE_ONE] = AnomalyScorer(kde).score(tb).numpy()
    kde2 = KernelDensityEnergy(ta, metric="identity", bandwidth=kde.bandwidth, scales=KDE_SCALES)
    out[KDE] = AnomalyScorer(kde2).score(tb).numpy()
    return out


KDE_SCALES = (1.0, 2.0)
KDE_ONE = "EBM (kernel density, h)"
KDE = "EBM (kernel density, h and 2h)"


def run_anomaly(seeds: int, one_class_seeds: int, steps: int, bar: tqdm) -> dict:
    from sklearn.metrics import roc_auc_score

    res: dict[str, dict[str, list[float]]] = {}
    jobs = [(t, s, 0) for t in ("breast_cancer", "wine", "digits_vs_zeros") for s in range(seeds)]
    jobs += [("one_class_digits", s, d) for s in range(one_class_seeds) for d in range(10)]
    per_digit: dict[str, list[list[float]]] = {}
    for task, seed, digit in jobs:
        train, test, labels = anomaly_task(task, seed, digit)
        scores = anomaly_scores(train, test, seed, steps)
        for method, sc in scores.items():
            auc = float(roc_auc_score(labels, sc))
            if task == "one_class_digits":
                per_digit.setdefault(method, [[] for _ in range(one_class_seeds)])[seed].append(auc)
            else:
                res.setdefault(task, {}).setdefault(method, []).append(auc)
        bar.update(1)
    # One-class digits: the mean over the 10 digits is one number per seed.
    res["one_class_digits"] = {m: [float(np.mean(v)) for v in runs] for m, runs in per_digit.items()}
    return {t: {m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)} for m, v in d.items()}
            for t, d in res.items()}


# ---------------------------------------------------------------- denoising (PSNR)
def psnr(estimate: Tensor, clean: Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((estimate.clamp(0, 1) - clean) ** 2).mean()))


def run_denoising(steps: int, bar: tqdm) -> tuple[dict, dict]:
    from scipy.ndimage import gaussian_filter
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    x = load_digits().data / 16.0
    perm = np.random.default_rng(0).permutation(len(x))
    train, val, test = x[perm[:1100]], x[perm[1100:1300]], x[perm[1300:]]
    mu, cov = train.mean(0), np.cov(train.T)
    gen = torch.Generator().manual_seed(123)
    clean = torch.tensor(test, dtype=torch.float32)
    noisy = {s: clean + s * torch.randn(clean.shape, generator=gen) for s in SIGMAS_DENOISE}
    val_t = torch.tensor(val, dtype=torch.float32)
    val_noisy = {s: val_t + s * torch.randn(val_t.shape, generator=gen) for s in SIGMAS_DENOISE}

    def smooth(z: np.ndarray, w: float) -> np.ndarray:
        return gaussian_filter(z.reshape(-1, 8, 8), sigma=(0, w, w)).reshape(-1, 64)

    pcas = {k: PCA(k).fit(train) for k in (5, 10, 15, 20, 30, 40)}

    def project(z: Tensor, k: int) -> Tensor:
        return torch.tensor(pcas[k].inverse_transform(pcas[k].transform(z.numpy())), dtype=torch.float32)

    out: dict[str, dict[str, float]] = {"noisy": {}, "Gaussian filter": {}, "PCA projection": {},
                                        "LMMSE (linear-Gaussian Tweedie)": {}, "EBM (DSM + Tweedie)": {}}
    for s in SIGMAS_DENOISE:
        out["noisy"][str(s)] = psnr(noisy[s], clean)
        # Peers' own parameters (filter width, PCA rank) are picked on the validation split.
        w = max((0.3, 0.5, 0.7, 1.0, 1.5), key=lambda w, s=s: psnr(
            torch.tensor(smooth(val_noisy[s].numpy(), w), dtype=torch.float32), val_t))
        filtered = torch.tensor(smooth(noisy[s].numpy(), w), dtype=torch.float32)
        out["Gaussian filter"][str(s)] = psnr(filtered, clean)

        k = max(pcas, key=lambda k, s=s: psnr(project(val_noisy[s], k), val_t))
        out["PCA projection"][str(s)] = psnr(project(noisy[s], k), clean)
        gain = cov @ np.linalg.inv(cov + s**2 * np.eye(64))
        lmmse = mu + (noisy[s].numpy() - mu) @ gain.T
        out["LMMSE (linear-Gaussian Tweedie)"][str(s)] = psnr(torch.tensor(lmmse, dtype=torch.float32), clean)
    torch.manual_seed(0)
    energy = GaussianResidualEnergy(mu[None], cov[None], (256, 256))
    levels = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7)
    dsm = DenoisingScoreMatching(levels, noise_conditional=True)
    fit(energy, torch.tensor(train, dtype=torch.float32), dsm, n_steps=steps, lr=1e-3,
        generator=torch.Generator().manual_seed(0))
    den = Denoiser(energy, noise_conditional=True, clip=(0, 1))
    examples = {}
    for s in SIGMAS_DENOISE:
        est = den.denoise(noisy[s], s)
        out["EBM (DSM + Tweedie)"][str(s)] = psnr(est, clean)
        examples[s] = (noisy[s][:8], est[:8])
    bar.update(1)
    plot_denoising(clean[:8], examples)
    return out, {"train": len(train), "val": len(val), "test": len(test), "dsm_levels": list(levels)}


def plot_denoising(clean: Tensor, examples: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 1 + 2 * len(examples)
    fig, axes = plt.subplots(rows, 8, figsize=(8, rows * 1.05))
    labels = ["clean"] + [f"{kind} σ={s}" for s in examples for kind in ("noisy", "EBM")]
    imgs = [clean] + [t for s in examples for t in examples[s]]
    for r, (lab, im) in enumerate(zip(labels, imgs, strict=True)):
        for c in range(8):
            axes[r, c].imshow(im[c].clamp(0, 1).reshape(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=1)
            axes[r, c].axis("off")
        axes[r, 0].set_title(lab, fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(OUT_PREFIX.with_name(OUT_PREFIX.name + "_denoising.png"), dpi=110)
    plt.close(fig)


OUT_PREFIX = RESULTS / "heads"


# ---------------------------------------------------------------- generation (MMD, classifier accuracy)
def mmd2(a: np.ndarray, b: np.ndarray, bandwidth: float) -> float:
    """Unbiased squared MMD with an RBF kernel exp(-|x - y|^2 / (2 h^2)) (Gretton et al. 2012)."""
    def k(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        d2 = (u**2).sum(1)[:, None] + (v**2).sum(1)[None] - 2 * u @ v.T
        return np.exp(-np.clip(d2, 0, None) / (2 * bandwidth**2))

    kaa, kbb = k(a, a), k(b, b)
    n, m = len(a), len(b)
    return float((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
                 - 2 * k(a, b).mean())


# Settings shared by every generation design; GEN_GRID varies the rest, and select_generation picks
# among them on validation digits only.
GEN_DEFAULTS = {"base": "empirical", "width": 256, "train_steps": 4000, "ema": 0.999,
                "levels": [0.5, 0.03, 10], "n_steps": 30, "step_scale": 0.2}
# The design this section reported before (Ledoit-Wolf base, last iterate, 10 steps at 0.05 sigma^2).
GEN_PREVIOUS = {**GEN_DEFAULTS, "base": "ledoit-wolf", "ema": None, "n_steps": 10, "step_scale": 0.05}
GEN_PILOT_SEEDS = (100, 101)
EBM_GEN = "EBM (DSM + weight average, annealed Langevin + Tweedie)"
EBM_PREV = "EBM, previous design (Ledoit-Wolf base, last iterate, 10 steps at 0.05 σ²)"
GMM = "GaussianMixture"
GMM_RAW = "GaussianMixture, unclipped (pixels outside [0, 1]; not images)"
BASE_ROW = "Gaussian base only (Ledoit-Wolf)"
REAL_ROW = "real training digits (reference)"


def generation_split(seed: int) -> dict[str, np.ndarray]:
    """Digits in [0, 1] split by ``seed``: 1300 training, 200 validation, the rest (297) test."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    perm = np.random.default_rng(seed).permutation(len(x))
    parts = {"train": perm[:1300], "val": perm[1300:1500], "test": perm[1500:]}
    out = {k: x[v] for k, v in parts.items()}
    out.update({f"y{k}": y[v] for k, v in parts.items()})
    return out


def class_gaussians(train: np.ndarray, ytr: np.ndarray, base: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-class means and covariances: the empirical covariance or its Ledoit-Wolf shrinkage (which
    lends the always-blank border pixels a variance the data do not have)."""
    from sklearn.covariance import LedoitWolf

    mus = np.stack([train[ytr == k].mean(0) for k in range(10)])
    if base == "ledoit-wolf":
        return mus, np.stack([LedoitWolf().fit(train[ytr == k]).covariance_ for k in range(10)])
    return mus, np.stack([np.cov(train[ytr == k].T) for k in range(10)])


def train_generator(train: np.ndarray, ytr: np.ndarray, design: dict, seed: int) -> GaussianResidualEnergy:
    """The class-conditional energy (Gaussian base plus MLP residual) trained by noise-conditional
    DSM on the levels of ``design``; with ``design["ema"]`` the weight average replaces the last
    iterate."""
    mus, covs = class_gaussians(train, ytr, design["base"])
    torch.manual_seed(seed)
    energy = GaussianResidualEnergy(mus, covs, (design["width"], design["width"]))
    dsm = DenoisingScoreMatching(gen_levels(design), noise_conditional=True)
    average = None if design["ema"] is None else WeightAverage(energy, design["ema"])
    fit(energy, torch.tensor(train, dtype=torch.float32), dsm, context=torch.eye(10)[torch.tensor(ytr)],
        n_steps=design["train_steps"], lr=1e-3, generator=torch.Generator().manual_seed(seed),
        callback=average, log_every=1 if average else 10)
    if average is not None:
        average.apply()
    return energy


def gen_levels(design: dict) -> tuple[float, ...]:
    top, bottom, n = design["levels"]
    return tuple(float(s) for s in np.geomspace(top, bottom, n))


def ebm_samples(energy: GaussianResidualEnergy, design: dict, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` samples of each class, ``(10 * per_class, 64)``, in [0, 1]."""
    levels, out = gen_levels(design), []
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    mus = energy.mu.double().numpy()
    covs = (energy.u.double() * energy.lam.double()[:, None]) @ energy.u.double().transpose(1, 2)
    for k in range(10):
        # Chains start from the energy's own Gaussian base at the largest level, N(mu_k, Sigma_k +
        # sigma_0^2 I), an exact draw of its quadratic part: Langevin at the small steps the fine
        # levels need barely moves along the high-variance principal directions.
        z0 = rng.multivariate_normal(mus[k], covs[k].numpy() + levels[0] ** 2 * np.eye(64), per_class)
        z = annealed_langevin(energy, torch.tensor(z0, dtype=torch.float32), levels,
                              context=torch.eye(10)[k], n_steps=design["n_steps"],
                              step_scale=design["step_scale"], bounds=(-1.0, 2.0), clip=(0.0, 1.0),
                              generator=gen)
        out.append(z.numpy())
    return np.concatenate(out)


def median_distance(z: np.ndarray) -> float:
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    return float(np.median(d[np.triu_indices(len(z), 1)]))


NEAR_COPY = 0.5  # a sample this close to a training digit counts as a near copy (about half the
# distance from a held-out real digit to its nearest training digit)


def nearest_distances(z: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Euclidean distance from each row of ``z`` to its nearest training digit (memorisation check:
    a model that copies training digits scores near 0)."""
    d2 = (z**2).sum(1)[:, None] + (train**2).sum(1)[None] - 2 * z @ train.T
    return np.sqrt(np.clip(d2, 0, None).min(1))


def sample_scores(z: np.ndarray, ref: np.ndarray, train: np.ndarray, labels: np.ndarray, clf) -> dict:
    """MMD² to ``ref`` at the median distance h of ``ref`` and at h/2, SVC accuracy on the
    intended labels, mean distance to the nearest training digit."""
    h, near = median_distance(ref), nearest_distances(z, train)
    return {"mmd2": mmd2(z, ref, h), "mmd2_half": mmd2(z, ref, h / 2),
            "accuracy": float(clf.score(z, labels)), "nearest_train": float(near.mean()),
            "near_copies": float((near < NEAR_COPY).mean())}


def generation_seed(seed: int, per_class: int, design: dict) -> tuple[dict, dict]:
    """Every method on split ``seed`` (same split for all): scores on the test digits, and the samples."""
    from sklearn.mixture import GaussianMixture
    from sklearn.svm import SVC

    d = generation_split(seed)
    train, ytr, test = d["train"], d["ytrain"], d["test"]
    rng = np.random.default_rng(seed)
    samples = {EBM_GEN: ebm_samples(train_generator(train, ytr, design, seed), design, per_class, seed),
               EBM_PREV: ebm_samples(train_generator(train, ytr, GEN_PREVIOUS, seed), GEN_PREVIOUS, per_class,
                                     seed)}
    gmm_parts, base_parts = [], []
    mus, lw = class_gaussians(train, ytr, "ledoit-wolf")
    for k in range(10):
        xk = train[ytr == k]
        gmm = min((GaussianMixture(c, reg_covar=1e-3, random_state=seed).fit(xk) for c in (1, 2, 3)),
                  key=lambda g, xk=xk: g.bic(xk))
        gmm_parts.append(gmm.sample(per_class)[0])
        base_parts.append(np.clip(rng.multivariate_normal(mus[k], lw[k], per_class), 0, 1))
    samples[GMM] = np.clip(np.concatenate(gmm_parts), 0, 1)
    samples[GMM_RAW] = np.concatenate(gmm_parts)
    samples[BASE_ROW] = np.concatenate(base_parts)
    labels = np.repeat(np.arange(10), per_class)
    clf = SVC(gamma="scale").fit(train, ytr)
    real = train[rng.choice(len(train), 10 * per_class, replace=False)]
    # Reference: real training digits against the same test digits for MMD²; the classifier on the
    # real test digits, and the test digits' own distance to their nearest training digit (what a
    # model that does not copy its training digits should be near).
    h, near = median_distance(test), nearest_distances(test, train)
    out = {REAL_ROW: {"mmd2": mmd2(real, test, h), "mmd2_half": mmd2(real, test, h / 2),
                      "accuracy": float(clf.score(test, d["ytest"])),
                      "nearest_train": float(near.mean()), "near_copies": float((near < NEAR_COPY).mean())}}
    for name, z in samples.items():
        out[name] = sample_scores(z, test, train, labels, clf)
    return out, samples


def run_generation(seeds: int, per_class: int, bar: tqdm, grid: list[dict] | None = None) -> dict:
    """The design of lowest validation MMD² among those whose samples the SVC classifies at >= 0.99
    (select_generation on the pilot splits), then every method on splits 0..seeds-1: mean ± std over
    seeds of each score, and the per-seed figures."""
    t0 = time.perf_counter()
    selection = select_generation(per_class, bar, GEN_GRID if grid is None else grid)
    ok = [r for r in selection if r["accuracy"] >= 0.99] or selection
    design = min(ok, key=lambda r: r["mmd2"])["design"]
    per_seed = []
    for seed in range(seeds):
        scores, samples = generation_seed(seed, per_class, design)
        per_seed.append(scores)
        if seed == 0:
            # The unclipped mixture looks like the clipped one on a [0, 1] colour scale: not drawn.
            shown = {k: v for k, v in samples.items() if k != GMM_RAW}
            d = generation_split(seed)
            real = np.zeros((10 * per_class, 64))
            for k in range(10):
                xk = d["test"][d["ytest"] == k][:per_class]
                real[k * per_class : k * per_class + len(xk)] = xk
            titles = {EBM_GEN: "EBM (this design)", EBM_PREV: "EBM (previous design)",
                      GMM: "GaussianMixture (clipped)", BASE_ROW: "Gaussian base (Ledoit-Wolf)"}
            shown = {titles.get(k, k): v for k, v in shown.items()}
            plot_samples({**shown, "real held-out test digits": real}, per_class)
        bar.update(1)
    methods, keys = list(per_seed[0]), list(per_seed[0][EBM_GEN])
    summary = {m: {k: {"mean": float(np.mean([r[m][k] for r in per_seed])),
                       "std": float(np.std([r[m][k] for r in per_seed]))} for k in keys} for m in methods}
    diff = [r[GMM]["mmd2"] - r[EBM_GEN]["mmd2"] for r in per_seed]
    return {"results": summary, "per_seed": per_seed, "seeds": seeds, "samples_per_class": per_class,
            "design": design, "previous_design": GEN_PREVIOUS, "selection": selection,
            "paired_gmm_minus_ebm": {"mean": float(np.mean(diff)), "std": float(np.std(diff))},
            "seconds": time.perf_counter() - t0}


# The candidate designs: each is trained and sampled on pilot splits 100 and 101 and scored on their
# validation digits only (MMD² at the validation median distance; the SVC accuracy needs no
# held-out digit). Entries override GEN_DEFAULTS.
GEN_GRID = [
    GEN_PREVIOUS,
    {"ema": None},
    {"base": "ledoit-wolf"},
    *({"n_steps": t, "step_scale": f} for t, f in ((10, 0.05), (20, 0.2), (30, 0.1), (30, 0.2), (30, 0.3),
                                                   (50, 0.2))),
    {"train_steps": 8000},
    {"train_steps": 8000, "ema": 0.9995},
    {"width": 512},
]


def select_generation(per_class: int, bar: tqdm, grid: list[dict]) -> list[dict]:
    """Validation scores of every design of ``grid`` on the pilot splits (no test digit is read)."""
    from sklearn.svm import SVC

    rows, trained = [], {}
    for cand in grid:
        design = {**GEN_DEFAULTS, **cand}
        scores = []
        for seed in GEN_PILOT_SEEDS:
            d = generation_split(seed)
            clf = SVC(gamma="scale").fit(d["train"], d["ytrain"])
            # Designs that differ only in sampling share one trained energy per split.
            key = (seed, *(str(design[k]) for k in ("base", "width", "train_steps", "ema", "levels")))
            if key not in trained:
                trained[key] = train_generator(d["train"], d["ytrain"], design, seed)
            z = ebm_samples(trained[key], design, per_class, seed)
            scores.append(sample_scores(z, d["val"], d["train"], np.repeat(np.arange(10), per_class), clf))
            bar.update(1)
        rows.append({"design": design, **{k: float(np.mean([s[k] for s in scores])) for k in scores[0]}})
    return rows


def plot_samples(samples: dict[str, np.ndarray], per_class: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(per_class, 10)
    fig, axes = plt.subplots(10, cols * len(samples) + len(samples) - 1, figsize=(len(samples) * 4.2, 4.4))
    for j, (name, s) in enumerate(samples.items()):
        for k in range(10):
            for c in range(cols):
                ax = axes[k, j * (cols + 1) + c]
                ax.imshow(s[k * per_class + c].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        axes[0, j * (cols + 1)].set_title(name, fontsize=8, loc="left")
    for ax in axes.flat:
        ax.axis("off")
    fig.savefig(OUT_PREFIX.with_name(OUT_PREFIX.name + "_samples.png"), dpi=110, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------- RL: a trained SQL agent's energy
def rollout(model, n: int, deterministic: bool, seed: int) -> tuple[Tensor, Tensor, float]:
    """n (state, action) pairs of the trained agent acting on a fresh env (actions scaled to
    [-1, 1] as in its replay buffer), and its mean episode return over the finished episodes."""
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=seed)
    states, actions, returns, ret = [], [], [], 0.0
    for _ in range(n):
        act, _ = model.predict(obs, deterministic=deterministic)
        states.append(obs)
        actions.append(model.policy.scale_action(act))
        obs, reward, term, trunc, _ = env.step(act)
        ret += float(reward)
        if term or trunc:
            returns.append(ret)
            ret, (obs, _) = 0.0, env.reset()
    mean_return = float(np.mean(returns)) if returns else float("nan")
    return (torch.tensor(np.array(states), dtype=torch.float32),
            torch.tensor(np.array(actions), dtype=torch.float32), mean_return)


# The action head reported against issue 15's perturbed-action target, chosen before it was run
# (on the argument in NOTES, not on AUROCs): the share of the policy's own actions with lower energy.
QUANTILE = "P_pi(E(s,a') < E(s,a)) (energy quantile)"


def run_rl(timesteps: int, seeds: int, bar: tqdm) -> dict:
    """rl_one_seed for agent seeds 0..seeds-1: every AUROC as mean, std and per seed; skipped when
    agents is not importable."""
    try:
        from ebrl.agents import SQL  # noqa: F401
    except ImportError as err:
        bar.update(seeds)
        return {"skipped": f"agents is not importable ({err}); the RL case needs ebrl.agents.SQL"}
    runs = []
    for seed in range(seeds):
        runs.append(rl_one_seed(timesteps, seed))
        bar.update(1)
    out = {k: runs[0][k] for k in ("env", "timesteps", "pairs", "buffer")}
    out["seeds"] = seeds
    out["per_seed"] = runs
    for part in ("auroc", "returns"):
        out[part] = {k: float(np.mean([r[part][k] for r in runs])) for k in runs[0][part]}
    out["auroc_std"] = {k: float(np.std([r["auroc"][k] for r in runs])) for k in runs[0]["auroc"]}
    for k in ("alpha", "state_bandwidth", "action_bandwidth", "fit_seconds", "train_seconds"):
        out[k] = [r[k] for r in runs]
    return out


def rl_one_seed(timesteps: int, seed: int) -> dict:
    """AUROC of the agent's own scores (E(s, a), -log pi(a|s), F(s)) and of the replay-buffer
    density heads (-log p(s), -log p(a|s)) separating the trained agent's states and actions on
    fresh episodes from unseen states and from perturbed or uniform actions."""
    from sklearn.metrics import roc_auc_score

    from ebrl.agents import SQL

    model = SQL("MlpPolicy", "Pendulum-v1", seed=seed, learning_starts=200, device="cpu")
    t0 = time.perf_counter()
    model.learn(timesteps)
    train_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    state_head = AnomalyScorer.for_agent(model, generator=gen)  # -log p(s) of the buffer's states
    action_head = AnomalyScorer.for_agent(model, actions=True, generator=gen)  # -log p(a|s)
    fit_s = time.perf_counter() - t0
    policy = model.policy
    critic = AnomalyScorer(policy.energy, temperature=policy.temperature, n_partition=1024)
    n = 1000
    labels = np.r_[np.zeros(n), np.ones(n)]
    out: dict = {"env": "Pendulum-v1", "timesteps": timesteps, "train_seconds": train_s, "fit_seconds": fit_s,
                 "alpha": policy.temperature, "pairs": n, "buffer": int(model.replay_buffer.size()),
                 "state_bandwidth": state_head.view.model.bandwidth,
                 "action_bandwidth": action_head.view.model.bandwidth, "auroc": {}, "returns": {}}
    rng = np.random.default_rng(seed)
    low, high = model.observation_space.low, model.observation_space.high
    box = torch.tensor(rng.uniform(low, high, (n, len(low))), dtype=torch.float32)
    theta, speed = rng.uniform(-np.pi, np.pi, n), rng.uniform(-8.0, 8.0, n)
    circle = torch.tensor(np.c_[np.cos(theta), np.sin(theta), speed], dtype=torch.float32)
    for mode, det in (("deployed (deterministic) actions", True), ("stochastic actions", False)):
        states, actions, ret = rollout(model, n, det, seed=1000 + seed)
        out["returns"][mode] = ret
        perturbed = (actions + 0.5 * torch.randn(actions.shape, generator=gen)).clamp(-1, 1)
        uniform = torch.rand(actions.shape, generator=gen) * 2 - 1
        scores = {"E(s,a)": lambda a, s=states: critic.score(a, context=s),
                  "-log pi(a|s)": lambda a, s=states: critic.score_normalized(a, s, gen),
                  QUANTILE: lambda a, s=states: critic.score_quantile(a, s, gen),
                  "-log p(a|s) (replay density)": lambda a, s=states: action_head.score(a, context=s)}
        for neg_name, neg in (("perturbed actions (+N(0, 0.5^2))", perturbed), ("uniform actions", uniform)):
            for score_name, fn in scores.items():
                sc = np.r_[fn(actions).numpy(), fn(neg).numpy()]
                out["auroc"][f"{mode} vs {neg_name}: {score_name}"] = float(roc_auc_score(labels, sc))
        if det:
            for neg_name, neg in (("uniform on the observation box", box),
                                  ("uniform angle and speed (valid states)", circle)):
                for score_name, fn in (("F(s) = -alpha log Z(s)", lambda z: critic.score_states(z, gen)),
                                       ("-log p(s) (replay density)", state_head.score)):
                    sc = np.r_[fn(states).numpy(), fn(neg).numpy()]
                    key = f"visited states vs {neg_name}: {score_name}"
                    out["auroc"][key] = float(roc_auc_score(labels, sc))
    return out


# ---------------------------------------------------------------- report
def write_report(res: dict, command: str) -> None:
    lines = [f"# Heads benchmark\n\n```\n{command}\n```\n",
             f"{res['machine']}; torch threads 1; total {res['seconds']:.0f} s.\n",
             "## Anomaly detection (AUROC, mean ± std over seeds; higher is better)\n"]
    tasks = list(res["anomaly"])
    methods = list(res["anomaly"][tasks[0]])
    lines.append("| method | " + " | ".join(tasks) + " |")
    lines.append("|---|" + "---|" * len(tasks))
    for m in methods:
        cells = [f"{res['anomaly'][t][m]['mean']:.3f} ± {res['anomaly'][t][m]['std']:.3f}" for t in tasks]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("\nSeeds per task: " + ", ".join(f"{t} {res['anomaly'][t][methods[0]]['n']}" for t in tasks)
                 + " (one-class digits: mean over the 10 digits per seed).\n")
    lines.append("## Denoising digits in [0, 1] (PSNR dB on held-out digits; higher is better)\n")
    lines.append("| method | " + " | ".join(f"σ={s}" for s in SIGMAS_DENOISE) + " |")
    lines.append("|---|" + "---|" * len(SIGMAS_DENOISE))
    for m, row in res["denoising"].items():
        lines.append(f"| {m} | " + " | ".join(f"{row[str(s)]:.2f}" for s in SIGMAS_DENOISE) + " |")
    lines.append("\n![denoising](heads_denoising.png)\n" if not QUICK else "")
    lines += generation_report(res["generation"])
    lines.append("## RL: a trained SQL agent's energy and its replay-buffer density as anomaly scores "
                 "(AUROC)\n")
    rl = res["rl"]
    if "skipped" in rl:
        lines.append(f"Skipped: {rl['skipped']}\n")
    else:
        returns = ", ".join(f"{k} {v:.0f}" for k, v in rl["returns"].items())

        def fmt(xs: list[float]) -> str:
            return " / ".join(f"{x:.3g}" for x in xs)

        lines.append(
            f"SQL on {rl['env']}, {rl['timesteps']} steps, agent seeds 0-{rl['seeds'] - 1} (alpha per seed "
            f"{fmt(rl['alpha'])}; mean episode return on the scoring episodes: {returns}). Positives: "
            f"{rl['pairs']} (state, action) pairs of each trained agent on fresh episodes (env seed 1000 + "
            "agent seed, never in its replay buffer). The replay densities are "
            "`AnomalyScorer.for_agent(model)` (-log p(s)) and "
            "`AnomalyScorer.for_agent(model, actions=True)` (-log p(a|s)) over the "
            f"{rl['buffer']} transitions of the buffer, bandwidths per seed {fmt(rl['state_bandwidth'])} and "
            f"{fmt(rl['action_bandwidth'])} (leave-one-out likelihood of the buffer itself); fitting both "
            f"took {fmt(rl['fit_seconds'])} s.\n")
        lines.append("| positives vs negatives: score | AUROC mean ± std | per seed |\n|---|---|---|")
        for k, v in rl["auroc"].items():
            per = " / ".join(f"{r['auroc'][k]:.3f}" for r in rl["per_seed"])
            lines.append(f"| {k} | {v:.3f} ± {rl['auroc_std'][k]:.3f} | {per} |")
    lines += ["", "## Targets (issues 5 and 15) and notes\n", *targets(res), "", *NOTES]
    (OUT_PREFIX.with_suffix(".md")).write_text("\n".join(lines) + "\n")


def generation_report(g: dict) -> list[str]:
    """The generation section: mean ± std over seeds per method, then the validation selection."""
    if "per_seed" not in g:  # a .json written before the multi-seed section
        return ["## Generation on digits\n", "Not rerun since the multi-seed version; run with "
                "--generation-only.\n"]
    pm = lambda r, k, d=4: f"{r[k]['mean']:.{d}f} ± {r[k]['std']:.{d}f}"  # noqa: E731
    lines = [f"## Generation on digits (mean ± std over {g['seeds']} splits, seeds 0-{g['seeds'] - 1})\n",
             f"{g['samples_per_class']} samples per class. MMD² (unbiased, RBF kernel) to the held-out test "
             "digits at h = their median pairwise distance and at h/2 (lower is better; h/2 weighs "
             "local shape more); accuracy of an SVC trained on the real training digits on each "
             "class's samples; mean distance from each sample to its nearest training digit "
             f"(memorisation check: 0 would be copies) and the share of samples closer than {NEAR_COPY} to "
             "one (near copies).\n",
             "| model | MMD² (h) | MMD² (h/2) | SVC accuracy | distance to nearest training digit | "
             "near copies |",
             "|---|---|---|---|---|---|"]
    for m, r in g["results"].items():
        copies = pm(r, "near_copies", 3) if "near_copies" in r else "-"
        lines.append(f"| {m} | {pm(r, 'mmd2')} | {pm(r, 'mmd2_half')} | {pm(r, 'accuracy', 3)} | "
                     f"{pm(r, 'nearest_train', 3)} | {copies} |")
    p = g["paired_gmm_minus_ebm"]
    lines += ["", f"Reference row: MMD² of {10 * g['samples_per_class']} real training digits; accuracy, "
              "nearest-training-digit distance and near copies of the real held-out test digits. Paired per "
              "split, "
              f"GaussianMixture MMD² minus EBM MMD² = {p['mean']:.4f} ± {p['std']:.4f}. EBM generation took "
              f"{g['seconds']:.0f} s in all (selection included).\n",
              "Design chosen on validation digits only (pilot splits 100 and 101: 1300 training, 200 "
              "validation digits each; the test digits of seeds 0-9 are never read): the lowest mean "
              "validation MMD² among designs whose samples the SVC (trained on the training digits) "
              "classifies at 0.99 or more. Every candidate: 10 geometric levels 0.5 → 0.03, the Tweedie "
              "step at 0.03, scores averaged over the two pilot splits:\n",
              "| base covariance | residual width | weights | DSM steps | Langevin steps per level "
              "| step / σ² | val MMD² (h) | val MMD² (h/2) | SVC accuracy | nearest training digit |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in g["selection"]:
        d = r["design"]
        w = "last iterate" if d["ema"] is None else f"EMA {d['ema']}"
        mark = " **(chosen)**" if d == g["design"] else ""
        lines.append(f"| {d['base']}{mark} | {d['width']} | {w} | {d['train_steps']} | {d['n_steps']} | "
                     f"{d['step_scale']} | "
                     f"{r['mmd2']:.4f} | {r['mmd2_half']:.4f} | {r['accuracy']:.3f} | "
                     f"{r['nearest_train']:.3f} |")
    lines.append("\n![samples](heads_samples.png)\n" if not QUICK else "")
    return lines


def generation_targets(g: dict) -> list[str]:
    """Issue 15's generation targets: MMD² below GaussianMixture's by more than the seed spread, and
    SVC accuracy >= 0.99 on the samples."""
    if "per_seed" not in g:
        return []
    r = g["results"]
    e, out = r[EBM_GEN], []
    for peer in (GMM, GMM_RAW):
        gm = r[peer]
        gap, spread = gm["mmd2"]["mean"] - e["mmd2"]["mean"], max(gm["mmd2"]["std"], e["mmd2"]["std"])
        verdict = "met" if gap > spread else "**missed**"
        out.append(f"- generation MMD²: EBM {e['mmd2']['mean']:.4f} ± {e['mmd2']['std']:.4f} vs {peer} "
                   f"{gm['mmd2']['mean']:.4f} ± {gm['mmd2']['std']:.4f} (gap {gap:+.4f}, spread "
                   f"{spread:.4f}): {verdict}")
    acc = e["accuracy"]["mean"]
    out.append(f"- generation SVC accuracy on EBM samples: {acc:.3f} ± {e['accuracy']['std']:.3f} vs target "
               "0.99: " + ("met" if acc >= 0.99 else "**missed**"))
    return out


def targets(res: dict) -> list[str]:
    """Each target of issues 5 and 15 checked against this run's own numbers."""
    out = []
    for task, row in res["anomaly"].items():
        best = max((m for m in row if not m.startswith("EBM")), key=lambda m: row[m]["mean"])
        ok = row[KDE]["mean"] >= row[best]["mean"]
        out.append(f"- anomaly, {task}: {KDE} {row[KDE]['mean']:.3f} vs best peer {best} "
                   f"{row[best]['mean']:.3f} ({row[KDE]['mean'] - row[best]['mean']:+.3f}): "
                   + ("met" if ok else "**missed**"))
    den = res["denoising"]
    for s in SIGMAS_DENOISE:
        e, lm = den["EBM (DSM + Tweedie)"][str(s)], den["LMMSE (linear-Gaussian Tweedie)"][str(s)]
        verdict = "met" if e > lm else "**missed**"
        out.append(f"- denoising σ={s}: EBM {e:.2f} dB vs LMMSE {lm:.2f} dB: {verdict}")
    out += generation_targets(res["generation"])
    auroc = res["rl"].get("auroc", {})
    perturbed = "deployed (deterministic) actions vs perturbed actions (+N(0, 0.5^2)): "
    for what, head, key, goal in (
        ("unseen states", "replay density",
         "visited states vs uniform on the observation box: -log p(s) (replay density)", 0.9),
        ("perturbed actions", "energy quantile", perturbed + QUANTILE, 0.8),
        ("perturbed actions", "replay density", perturbed + "-log p(a|s) (replay density)", 0.8),
    ):
        if key in auroc:
            verdict = "met" if auroc[key] >= goal else "**missed**"
            worst = min(r["auroc"][key] for r in res["rl"]["per_seed"])
            out.append(f"- RL {what}: {head} {auroc[key]:.3f} (mean over seeds; lowest seed "
                       f"{worst:.3f}) vs target {goal}: {verdict}")
    return out


NOTES = [
    "Anomaly method (issue 15): `KernelDensityEnergy` (ebrl/heads/density.py), the energy -log p(x) of a "
    "Gaussian kernel density over the training inliers on standardised features (Sigma = I). Its one "
    "parameter, the bandwidth h, is the grid point of largest leave-one-out log-likelihood of the "
    "training inliers themselves: every inlier is in turn the validation split; no outlier, no test point "
    "and no test label enters any choice. The reported score averages the energies at h and 2h (a "
    "two-scale ensemble, like the noise levels of the DSM row); the single-scale energy at h is shown too. "
    "There is no training length. Every method sees the same splits (seeds 0-9 on every task; one-class "
    "digits: 10 digits per seed, the mean over digits is one number per seed).",
    "",
    "How the design was chosen: on pilot seeds 100-159 (other random splits of the same data sets; the "
    "reported seeds 0-9 were not run before this benchmark). There, leave-one-out likelihood also chose "
    "between metrics poorly (it preferred the Ledoit-Wolf-whitened kernel on breast cancer and wine and "
    "the per-feature one on one-class digits, the worse AUROC each time), so the metric is fixed: the "
    "identity on standardised features. A product of per-feature kernel densities (axis-aligned, like an "
    "isolation forest) matched IsolationForest on breast cancer (0.957 vs 0.955 on seeds 100-119) but fell "
    "to 0.87 on digits-vs-zeros and 0.92 on one-class digits; random-subspace ensembles, Gaussianised "
    "marginals and sums with the joint density did not beat IsolationForest on breast cancer either; after "
    "a first run of this benchmark showed the breast-cancer miss, one more variant (Yeo-Johnson-transformed "
    "features with the Jacobian, pilot seeds 100-139: 0.946 vs IsolationForest 0.954) was tried and not "
    "adopted. Nothing was changed after seeing the seeds 0-9 results. The "
    "DSM row (Gaussian base plus MLP residual) keeps its earlier settings: its 1500 steps were chosen "
    "after a pilot that saw test labels of seeds 0-2 (breast cancer, digits-vs-zeros).",
    "",
    "Denoising: a Gaussian base (Ledoit-Wolf fit) plus an MLP residual that starts at zero, trained by "
    "noise-conditional denoising score matching (log σ in the context); one Tweedie step at the given σ. "
    "Peers' own parameters (filter width, PCA rank, GMM size by BIC) are picked on training or validation "
    "data.",
    "",
    "Generation (issue 15): the same energy class per digit class (`GaussianResidualEnergy`, one-hot class "
    "and log σ in the context), trained by noise-conditional DSM over 10 geometric levels 0.5 → 0.03; the "
    "weights that sample are the exponential moving average of the training iterates "
    "(`ebrl.training.WeightAverage`; Song & Ermon 2020). Samples come from `ebrl.heads.annealed_langevin`: "
    "each chain starts from the energy's own Gaussian base blurred at σ = 0.5, runs T Langevin steps of "
    "size c·σ² at each level and ends with a Tweedie step at σ = 0.03; like every method's, the samples are "
    "clipped to [0, 1]. Every setting (base covariance, weight averaging, DSM steps, width, T, c) was chosen "
    "on validation digits (200 per split, held out of training) of pilot splits 100 and 101, never on the "
    "test digits of the reported splits 0-9: the exploration that produced the candidate list ran on "
    "those validation digits, and the selection table above is rerun by the command itself. The two changes "
    "from the previous design, and why: (1) the base covariance is the empirical one, not Ledoit-Wolf: "
    "shrinkage toward a multiple of I gives the always-blank border pixels a variance of about 0.02 that "
    "the residual did not learn to remove, so samples carried noise outside [0, 1], and clipping it cost "
    "variance (summed pixel variance of the samples 3.4 against 4.6 for real digits); (2) the weight "
    "average: the last Adam iterate's samples had pixels 0.2-0.5 outside [0, 1] in most samples; with the "
    "average, validation MMD² fell from 0.0018 to 0.0003 (pilot split 100, 30 steps of 0.2 σ² per level). "
    "Tried on the same validation digits and not adopted: a reflecting box near [0, 1] inside the chains "
    "(truncating the model raised MMD² to 0.004-0.014), Tweedie at a larger σ than the last level "
    "(0.05-0.12), a smaller last level (0.01, 15 levels), weight decay 0.01, width 128, and longer chains "
    "(50-100 steps per level, or steps of 0.5 σ²), which drift the class means. Before that work, the "
    "metric itself was examined on the test digits of splits 0-2 with the peers only (GaussianMixture "
    "clipped and unclipped, real digits, kernel widths h to h/4); that led to the unclipped row and the h/2 "
    "column, and no EBM sample or setting was scored on test digits before the reported run (which was "
    "repeated once, unchanged, to add the near-copies column and short figure titles; every figure "
    "reproduced).",
    "",
    "Clipping and the unclipped mixture: a Gaussian mixture fitted per class matches the digits' mean and "
    "covariance, which is nearly all that an RBF kernel at the median distance sees, so its unclipped "
    "samples score at the noise floor of real digits; clipping them to [0, 1] (a pixel outside [0, 1] is "
    "not an image; the previous version of this section clipped as well) is what costs the mixture its "
    "MMD². The unclipped row is shown for that reason, and the EBM is compared with it in the targets. "
    "Memorisation check: the distance from each sample to its nearest training digit stands next to the "
    "same distance for the held-out test digits (reference row); a model that copied training digits would "
    "score well below the reference, and its near copies (closer than 0.5 to a training digit) would "
    "show. Longer DSM training moves samples toward the training digits (selection table: 1.03-1.04 after "
    "8000 steps against 1.12 after 4000). The chosen design's samples lie 1.025 ± 0.014 from their nearest "
    "training digit against 1.063 ± 0.012 for held-out test digits, a little closer, and 2 of its 5000 "
    "samples (split 2) are near copies against 0.4 % of held-out digits: a pull toward the training set, "
    "not copying. Its samples are also less varied than real digits (summed pixel variance about 4.2 "
    "against 4.6 on the pilot validation digits; the figure shows it, e.g. for the ones).",
    "",
    "Generation targets: the EBM beats the clipped GaussianMixture on MMD² at h (0.0008 ± 0.0007 against "
    "0.0034 ± 0.0005 over splits 0-9; paired, 0.0026 ± 0.0011 lower) and the SVC classifies its samples at "
    "0.998. It does not beat the unclipped mixture (whose samples are not images): 0.0003 ± 0.0006 at h, "
    "0.0005 below the EBM, within the seed spread (0.0007); 0.0013 ± 0.0009 at h/2, 0.0014 below the "
    "EBM's 0.0027 ± 0.0011, outside it.",
    "",
    "RL: E(s, a) pooled over states mostly ranks states (each state's energy has its own offset, V(s)), "
    "so it separates actions less than -log π(a|s) = E/α + log Z(s), which removes the offset. F(s) = "
    "-V(s) is the negative soft value, not a density: it is high for states from which the return is "
    "poor, and it separates the trained agents' states (mostly near upright) from uniform ones because on "
    "Pendulum most unvisited states are also bad ones. The replay density -log p(s) flags what the agent "
    "has not seen whatever its value: 0.99 against the observation box. A density fitted on the buffer "
    "would score its own points, so the positives are fresh episodes of the trained agents, not buffer "
    "pairs. For actions the replay density is conditional, -log p(a|s) = -log p(s, a) + log p(s) (the "
    "same kernels; bandwidth by the leave-one-out conditional likelihood of the buffer), so a state's own "
    "rarity cancels as it does in -log π.",
    "",
    "RL, the energy quantile (2026-12-03): P_π(E(s, a') < E(s, a)) is uniform on [0, 1] for the policy's "
    "own draws at every state, so it also removes each state's spread, which -log π keeps (log Z); it was "
    "declared the perturbed-action head before its first run, on that argument alone. It does not "
    "help: in the run of that day 0.580 for deployed actions and 0.763 for the policy's own draws, "
    "against -log π's 0.587 and 0.778; in this run 0.611 and 0.684 against 0.615 and 0.695. Two likely "
    "reasons, neither measured here: deployed actions need not sit at the critic's energy minimum (the "
    "deterministic act is the Boltzmann policy's mean), and Pendulum's actions often sit at the box edge, "
    "where the clipped perturbation leaves them unchanged. The replay density's figure for deployed "
    "against perturbed actions moves with the agent more than with the head: 0.671 (lowest seed 0.614) "
    "on the agents of 2026-12-02's code, 0.837 (lowest 0.819) on 2026-12-03's, and in this run "
    "(2026-12-08, the defaults of the thirteenth session: rewards scaled by 0.1, layer-normalised last "
    "critic layer, learning rate 1e-3, the mean act) 0.720 (lowest 0.685), below the 0.8 target. The "
    "agents here are SQL with learning_starts=200 and otherwise the defaults of the code they ran on.",
]


QUICK = False


def main() -> None:
    global OUT_PREFIX, QUICK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one seed, short training")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per anomaly task")
    parser.add_argument("--one-class-seeds", type=int, default=10,
                        help="seeds for one-class digits (each: 10 digits)")
    parser.add_argument("--rl-steps", type=int, default=10000, help="SQL training steps on Pendulum-v1")
    parser.add_argument("--rl-seeds", type=int, default=3, help="SQL agents (seeds 0..n-1) for the RL case")
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md from the saved .json")
    parser.add_argument("--rl-only", action="store_true",
                        help="rerun only the RL case into the saved .json (its command is appended)")
    parser.add_argument("--gen-seeds", type=int, default=10,
                        help="digit splits (seeds 0..n-1) for generation")
    parser.add_argument("--generation-only", action="store_true",
                        help="rerun only generation into the saved .json (its command is appended)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    QUICK = args.quick
    if args.quick:
        OUT_PREFIX = RESULTS / "heads_quick"
        args.seeds, args.one_class_seeds, args.rl_steps, args.rl_seeds, args.gen_seeds = 1, 1, 300, 1, 1
        for design in (GEN_DEFAULTS, GEN_PREVIOUS):
            design["train_steps"] = 100
    grid = [{}] if args.quick else GEN_GRID
    per_class = 10 if args.quick else 50
    steps = {"anomaly": 60 if args.quick else 1500, "denoise": 100 if args.quick else 3000}
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        saved = json.loads(OUT_PREFIX.with_suffix(".json").read_text())
        write_report(saved, saved["command"])
        return
    command = "python experiments/benchmarks/heads.py " + " ".join(sys.argv[1:])
    if args.rl_only or args.generation_only:
        # One section rerun into the saved results; the other sections' figures stay as they are.
        saved = json.loads(OUT_PREFIX.with_suffix(".json").read_text())
        t0, tag = time.perf_counter(), "   # RL section" if args.rl_only else "   # generation section"
        if args.rl_only:
            with tqdm(total=args.rl_seeds, desc="heads benchmark, rl") as bar:
                saved["rl"] = run_rl(args.rl_steps, args.rl_seeds, bar)
            saved["rl"]["seconds"] = time.perf_counter() - t0
        else:
            with tqdm(total=2 * len(grid) + args.gen_seeds, desc="heads benchmark, generation") as bar:
                saved["generation"] = run_generation(args.gen_seeds, per_class, bar, grid)
        kept = [line for line in saved["command"].split("\n") if not line.endswith(tag)]
        saved["command"] = "\n".join([*kept, command.strip() + tag])
        OUT_PREFIX.with_suffix(".json").write_text(json.dumps(saved, indent=2))
        write_report(saved, saved["command"])
        return
    t0 = time.perf_counter()
    bar = tqdm(total=3 * args.seeds + 10 * args.one_class_seeds + 1 + 2 * len(grid) + args.gen_seeds
               + args.rl_seeds, desc="heads benchmark")
    res: dict = {"command": command.strip(), "machine": f"{platform.processor() or platform.machine()}, "
                 f"{platform.python_version()}, torch {torch.__version__}", "steps": steps}
    bar.set_postfix_str("anomaly")
    res["anomaly"] = run_anomaly(args.seeds, args.one_class_seeds, steps["anomaly"], bar)
    bar.set_postfix_str("denoising")
    res["denoising"], res["denoising_setup"] = run_denoising(steps["denoise"], bar)
    bar.set_postfix_str("generation")
    res["generation"] = run_generation(args.gen_seeds, per_class, bar, grid)
    bar.set_postfix_str("rl")
    res["rl"] = run_rl(args.rl_steps, args.rl_seeds, bar)
    bar.close()
    res["seconds"] = time.perf_counter() - t0
    OUT_PREFIX.with_suffix(".json").write_text(json.dumps(res, indent=2))
    write_report(res, res["command"])
    print(OUT_PREFIX.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
