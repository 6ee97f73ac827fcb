"""Smoke test of the bench (bench/): every part at --quick sizes, so the bench cannot rot.

The analytic model's denoiser is checked against the truth first (Tweedie's formula by
autograd, and a Monte-Carlo posterior mean in a 4-number latent), through ComfyUI's own
model wrapper. Then each part runs at a few steps and tiny sizes through the real nodes,
writes its table and plot, and its figures must say what the papers say.
"""

import math
import os

import pytest
import torch


@pytest.fixture(scope="module")
def bench_results(comfy, tmp_path_factory):
    from bench import run

    out = str(tmp_path_factory.mktemp("bench"))
    results = run.run_parts(comfy, out, run.PARTS, run.QUICK)
    return out, results, run.summary(results, 0.0)


def test_analytic_denoiser_is_the_posterior_mean(comfy):
    from bench import analytic_model as am

    classes = am.GaussianClasses(channels=4, size=1, class_std=0.7, seed=5)
    weights = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    sigma = torch.tensor([0.8, 0.8], dtype=torch.float64)
    x = classes.sample(torch.tensor([0, 1]), torch.Generator().manual_seed(0)) + 0.8 * torch.randn(2, 4, 1, 1, dtype=torch.float64)
    denoised = classes.denoise(x, sigma, weights)

    # Tweedie: D(x) = x + sigma^2 * grad log p_sigma(x)
    x_grad = x.clone().requires_grad_(True)
    score, = torch.autograd.grad(classes.log_density(x_grad, 0.8, weights).sum(), x_grad)
    assert torch.allclose(denoised, x + 0.8 ** 2 * score, atol=1e-10)

    # Monte Carlo: the likelihood-weighted mean of prior samples
    generator = torch.Generator().manual_seed(1)
    for b in range(2):
        labels = torch.multinomial(weights[b], 400_000, replacement=True, generator=generator)
        prior = classes.sample(labels, generator)
        log_w = -((prior - x[b]) ** 2).flatten(1).sum(1) / (2 * 0.8 ** 2)
        mc = (torch.softmax(log_w, 0).view(-1, 1, 1, 1) * prior).sum(0)
        assert torch.allclose(mc, denoised[b], atol=0.02)

    # Through ComfyUI's wrapper (EPS input scaling and calculate_denoised) it is the same.
    model = am.analytic_model(classes)
    context = torch.cat([am.unconditional(classes)[0][0], am.class_conditioning(classes, 1)[0][0]])
    sigma32 = sigma.to(torch.float32)
    through_comfy = model.model.apply_model(x.to(torch.float32), sigma32, c_crossattn=context,
                                            transformer_options={"sigmas": sigma32})
    expected = classes.denoise(x.to(torch.float32), sigma32, weights)
    assert torch.allclose(through_comfy.double(), expected, rtol=1e-5, atol=1e-5)


def test_reconstruction_exact_methods_beat_ddim(bench_results):
    out, results, _ = bench_results
    for name in ("analytic", "tiny"):
        rows, ratios = results["reconstruction"][name]
        at_cfg7 = {r["method"]: r["latent_mse"] for r in rows if r["cfg"] == 7.0 and r["guidance"] == "cond"}
        assert at_cfg7["DDIM"] > 1e-4, name
        assert all(at_cfg7[m] <= 1e-10 for m in ("EDICT", "BDIA", "O-BELM")), (name, at_cfg7)
        assert all(ratio > 1e4 for by_method in ratios.values() for ratio in by_method.values()), name
    tiny_rows = results["reconstruction"]["tiny"][0]
    assert all("pixel_mse" in r for r in tiny_rows)
    _assert_written(out, "reconstruction")


def test_edit_fidelity_lands_in_the_target_class(bench_results):
    out, results, _ = bench_results
    rows = {(r["method"], r["strength"]): r for r in results["edit_fidelity"]["rows"]}
    # At strength 0.9 the edit reaches class B, and inversion keeps the place in the class
    # far better than img2img from fresh noise.
    assert all(rows[(m, 0.9)]["hit"] >= 0.75 for m in ("EDICT", "BDIA", "O-BELM"))
    for method in ("EDICT", "BDIA", "DDIM"):
        assert rows[(method, 0.9)]["position"] > rows[("SDEdit", 0.9)]["position"] + 0.1, method
    assert {r["steps"] for r in results["edit_fidelity"]["sweep"]} == set(run_sizes()["edit"]["sweep_steps"])
    # The exact methods' inverted states are measured against DDIM inversion's.
    assert all(0 < rows[(m, 0.9)]["off_ddim"] < math.inf for m in ("EDICT", "BDIA", "O-BELM"))
    # O-BELM's edit along normal's near-equal steps (leapfrog, an undamped second mode) and
    # along karras' shrinking ones; measured at the quick sizes: position 0.146 and 0.965
    position = {(r["method"], r["scheduler"]): r["position"] for r in results["edit_fidelity"]["by_scheduler"]}
    assert position[("O-BELM", "karras")] > position[("O-BELM", "normal")] + 0.5, position
    _assert_written(out, "edit_fidelity")


def test_cost_counts_calls_and_compares_with_ksampler(bench_results):
    out, results, _ = bench_results
    cost = results["cost"]
    assert {name for name, _ in cost["ratios"]} == {"KSampler", "EDICT invert", "EDICT sample", "BDIA invert",
                                                   "BDIA sample"}
    assert all(0 < r < math.inf for r in cost["ratios"].values())
    for peaks, latent_bytes in cost["memory"].values():
        assert all(peak > 0 and blocks.startswith("1x ") for peak, _, blocks in peaks.values()) and latent_bytes > 0
    assert set(cost["fits"]) == {"EDICT invert", "EDICT sample", "BDIA invert", "BDIA sample"}
    with open(os.path.join(out, "cost.md")) as f:
        text = f.read()
    # Counted calls: BDIA sampling from a pair makes one call fewer than its steps.
    calls = run_sizes()["cost"]["sizes"][0][1]
    assert f"| BDIA sample | {calls - 1} |" in text and f"| KSampler | {calls} |" in text
    _assert_written(out, "cost")


def test_scaling_and_summary(bench_results):
    out, results, summary = bench_results
    assert len(results["scaling"]["lines"]) == 4
    _assert_written(out, "scaling")
    assert "DDIM/EDICT" in summary and "DDIM/O-BELM" in summary and "KSampler" in summary and "latent-sized buffers" in summary


def test_convergence_orders_and_exact_round_trips(bench_results):
    out, results, summary = bench_results
    convergence = results["convergence"]
    assert all(check < 1e-6 for check in convergence["reference_check"].values())
    orders = {(r["method"], r["cfg"]): r["order_tail"] for r in convergence["generation"]}
    for cfg in (1.0, 7.0):  # measured at the quick sizes: O-BELM 1.99 / 1.98, DDIM 0.97 / 0.98
        assert 1.8 <= orders[("O-BELM", cfg)] <= 2.2 and 0.85 <= orders[("DDIM", cfg)] <= 1.15, cfg
    exact_to = {(r["method"], r["cfg"]): r["exact_to"] for r in convergence["round_trip"]}
    largest = max(run_sizes()["convergence"]["trip_steps"])
    assert all(steps == (0 if method == "DDIM" else largest) for (method, _), steps in exact_to.items()), exact_to
    assert "O-BELM" in summary
    _assert_written(out, "convergence")


def run_sizes():
    from bench import run

    return run.QUICK


def _assert_written(out, part):
    with open(os.path.join(out, f"{part}.md")) as f:
        text = f.read()
    assert "| method" in text or "| run" in text
    assert os.path.getsize(os.path.join(out, f"{part}.png")) > 1000
