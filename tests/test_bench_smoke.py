"""Smoke test of the bench (bench/): every part at --quick sizes, so the bench cannot rot.

The analytic model's denoiser is checked against the truth first (Tweedie's formula by
autograd, and a Monte-Carlo posterior mean in a 4-number latent), through ComfyUI's own
model wrapper. Then each part runs at a few steps and tiny sizes through the real nodes,
writes its table and plot, and its figures must say what its tables claim: the model calls
the spec states (counted, not assumed), round trips exact to float32 rounding, and the
ordering of the methods. The methods are edict_core.spec.SPECS (bench/methods.py): a method
added there is checked here too, against the generic bounds where no figure of its own is
measured yet.

Each bound sits near the figure measured at the quick sizes (CPU, torch 2.14.1, ComfyUI
0.3.75), which its comment gives with the margin; every test prints its figures (-s).
Deterministic figures (call counts, float rounding, the analytic model's errors) have
margins of 2x to 4x, or one sample of eight in a hit rate. Times are printed, not bounded.
"""

import os

import pytest
import torch

# One float32 ulp relative (2^-23): a float32 result within it of the input is the input up
# to the last bit of its largest elements. The quick bench measures 0 for every exact round trip.
FLOAT32_ULP = 2.0 ** -23


@pytest.fixture(scope="module")
def bench_results(comfy, tmp_path_factory):
    from bench import run

    out = str(tmp_path_factory.mktemp("bench"))
    results = run.run_parts(comfy, out, run.PARTS, run.QUICK)
    return out, results, run.summary(results, 0.0)[0]


def test_analytic_denoiser_is_the_posterior_mean(comfy):
    from bench import analytic_model as am

    classes = am.GaussianClasses(channels=4, size=1, class_std=0.7, seed=5)
    weights = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    sigma = torch.tensor([0.8, 0.8], dtype=torch.float64)
    seeded = torch.Generator().manual_seed(0)
    # every draw from a seeded generator: the Monte-Carlo tolerance holds for this x, whatever ran before
    x = classes.sample(torch.tensor([0, 1]), seeded) + 0.8 * torch.randn(2, 4, 1, 1, dtype=torch.float64, generator=seeded)
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


def test_every_spec_method_is_benched(comfy):  # comfy: bench.convergence imports ComfyUI
    """The bench's methods are SPECS' titles in order, with DDIM (and SDEdit) as baselines;
    each runs through its spec's node ids at its spec's defaults."""
    from bench import convergence, cost, edit_fidelity, methods
    from edict_core.spec import SPECS

    titles = tuple(spec.title for spec in SPECS.values())
    assert methods.EXACT == titles and methods.METHODS == titles + ("DDIM",)
    assert edit_fidelity.METHODS == methods.METHODS + ("SDEdit",)
    assert cost.OPS == ("KSampler",) + tuple(f"{t} {d}" for t in titles for d in ("invert", "sample"))
    for spec in SPECS.values():
        assert methods.node(spec.title, "Invert") == spec.node_id("Invert")
        assert methods.settings(spec.title) == spec.defaults
        assert any(entry and entry[0] is spec for entry in convergence.METHODS.values()), spec.title


def test_reconstruction_exact_methods_are_exact_and_ddim_is_not(bench_results):
    from bench import methods

    out, results, _ = bench_results
    figures = {}
    for name in ("analytic", "tiny"):
        rows, _ = results["reconstruction"][name]
        for r in rows:
            figures[(name, r["method"], r["guidance"], r["cfg"], r["steps"])] = r
    print({key: (f"{r['rel_error']:.3g}", f"{r.get('pixel_mse', float('nan')):.4g}") for key, r in figures.items()})
    # Every exact round trip, at every guidance and step count: measured 0 (every float32 of
    # the latent back); bound one float32 ulp relative.
    for key, r in figures.items():
        if key[1] in methods.EXACT:
            assert r["rel_error"] <= FLOAT32_ULP, key
    # DDIM inversion's round trip, conditional cfg 7 (relative error): analytic measured 0.437 at
    # 4 steps, 0.246 at 8 (it falls with the step, first order); tiny 118 at 3 steps (random
    # weights). Bounds at about half of each: a million float32 ulps and more above the exact methods.
    ddim = {(name, steps): r["rel_error"] for (name, method, kind, cfg, steps), r in figures.items()
            if method == "DDIM" and kind == "cond" and cfg == 7.0}
    assert ddim[("analytic", 4)] >= 0.2 and ddim[("analytic", 8)] >= 0.12, ddim
    assert ddim[("analytic", 4)] >= 1.5 * ddim[("analytic", 8)], ddim  # measured 1.78x
    assert ddim[("tiny", 3)] >= 50, ddim
    # Decoded, the exact round trips are the VAE's own round trip (all equal: measured pixel
    # MSE 0.2102 each) and DDIM's is worse (0.2455: 1.17x); bound 1.1x.
    tiny = [r for r in results["reconstruction"]["tiny"][0]]
    exact_pixels = {r["pixel_mse"] for r in tiny if r["method"] in methods.EXACT}
    assert len(exact_pixels) == 1, exact_pixels
    assert next(r["pixel_mse"] for r in tiny if r["method"] == "DDIM") >= 1.1 * exact_pixels.pop()
    _assert_written(out, "reconstruction")


def test_edit_fidelity_orders_the_methods_as_its_tables_say(bench_results):
    from bench import methods

    out, results, _ = bench_results
    edit = results["edit_fidelity"]
    rows = {(r["method"], r["strength"]): r for r in edit["rows"]}
    print({k: (r["hit"], round(r["position"], 3), round(r["off_ddim"], 3)) for k, r in rows.items()})
    # Strength 0.9, cfg 3, 16 steps, 8 samples: every method's edit lands in class B (measured
    # 1.0 for all; bound 7 of 8). Inversion keeps the place in the class, img2img from fresh noise
    # does not: position measured EDICT 0.50, O-BELM 0.83, BDIA 0.93, DDIM 0.95, against SDEdit's
    # 0.05; bounds 0.4 and 0.15.
    for method in methods.METHODS:
        assert rows[(method, 0.9)]["hit"] >= 7 / 8, method
        assert rows[(method, 0.9)]["position"] >= 0.4, method
    assert rows[("SDEdit", 0.9)]["position"] <= 0.15
    # The exact methods' inverted states lie off DDIM inversion's (the "off DDIM's" column; the
    # expansive part of their inversions), further the further they invert: measured 0.21 to 0.25
    # at strength 0.9, 0.04 to 0.12 at 0.5 (2.1x for EDICT, 5.7x for BDIA and O-BELM). Rex's
    # inverted x lies further off (measured 1.83 at 0.9, 0.48 at 0.5) and still keeps the
    # position (0.88).
    for method in methods.EXACT:
        off_far, off_near = rows[(method, 0.9)]["off_ddim"], rows[(method, 0.5)]["off_ddim"]
        top = 2.5 if method == "Rex" else 0.5
        assert 0.1 <= off_far <= top and off_far >= 1.5 * off_near, (method, off_far, off_near)
    # The sweep at cfg 7, strength 0.7: DDIM keeps position where the exact methods lose it (the
    # EXPLANATION): at 16 steps measured DDIM 0.968, the best exact method 0.368 (BDIA); bound a
    # 0.3 gap.
    last = max(r["steps"] for r in edit["sweep"])
    assert {r["steps"] for r in edit["sweep"]} == set(run_sizes()["edit"]["sweep_steps"])
    sweep = {r["method"]: r["position"] for r in edit["sweep"] if r["steps"] == last}
    print("sweep", last, sweep)
    # Rex (RK4) keeps more of it (measured 0.716) than the other exact methods, and still less than DDIM.
    assert sweep["DDIM"] >= max(sweep[m] for m in methods.EXACT if m != "Rex") + 0.3, sweep
    assert sweep["DDIM"] > sweep["Rex"], sweep
    _assert_written(out, "edit_fidelity")


def test_obelm_edits_keep_the_source_where_its_second_mode_is_damped(comfy, bench_results):
    """O-BELM along normal's near-equal tail steps (strength 0.5: its second mode undamped)
    against karras' shrinking ones; and the spec's edit warning fires for the first only."""
    from bench import analytic_model as am
    from edict_core import denoise_schedule, prepare_sigmas
    from edict_core.obelm import second_mode_damping
    from edict_core.spec import OBELM_EDIT_DAMPING, SPECS

    import comfy.samplers

    _, results, _ = bench_results
    by = {(r["method"], r["scheduler"]): r for r in results["edit_fidelity"]["by_scheduler"]}
    print({k: (r["hit"], round(r["position"], 3)) for k, r in by.items()})
    # Measured: O-BELM position 0.146 (hit 0 of 8) on normal, 0.965 (hit 8 of 8) on karras, where
    # DDIM keeps 0.884: karras' O-BELM within the spec's 0.04 of DDIM's or better (OBELM_EDIT_DAMPING).
    assert by[("O-BELM", "karras")]["position"] >= 0.9 and by[("O-BELM", "karras")]["hit"] >= 7 / 8
    assert by[("O-BELM", "karras")]["position"] >= by[("DDIM", "karras")]["position"] - 0.04
    assert by[("O-BELM", "normal")]["position"] <= 0.3 and by[("O-BELM", "normal")]["hit"] <= 1 / 8
    assert by[("O-BELM", "normal")]["position"] <= by[("DDIM", "normal")]["position"] - 0.5
    # The same runs' schedules: the damping (last step / first step)^2 is above the warning's
    # threshold on normal, below it on karras, so O-BELM Invert names the drift exactly there.
    sizes = run_sizes()["edit"]
    sampling = am.analytic_model(am.GaussianClasses()).get_model_object("model_sampling")
    damping = {}
    for scheduler in ("normal", "karras"):
        sigmas = denoise_schedule(lambda n: comfy.samplers.calculate_sigmas(sampling, scheduler, n),
                                  sizes["steps"], sizes["scheduler_strengths"][0])
        prepared = prepare_sigmas(sigmas, float(sampling.sigma_min))
        damping[scheduler] = second_mode_damping(prepared)
        warned = SPECS["obelm"].edit_warning(prepared) is not None
        assert warned == (scheduler == "normal"), (scheduler, damping[scheduler])
    print("damping", damping, "threshold", OBELM_EDIT_DAMPING)


def test_cost_counts_the_calls_the_spec_states(bench_results):
    from bench import cost as cost_part
    from bench import methods
    from edict_core.spec import SPECS

    out, results, _ = bench_results
    cost = results["cost"]
    calls = run_sizes()["cost"]["sizes"][0][1]
    size = run_sizes()["cost"]["sizes"][0][0]
    counts = {name: c for (name, s), c in cost["calls"].items() if s == size}
    print(counts)
    assert counts["KSampler"]["counted"] == calls
    for spec in SPECS.values():
        invert, sample = counts[f"{spec.title} invert"], counts[f"{spec.title} sample"]
        # Sized to about `calls` calls: calls // calls_per_step steps, at least one (measured:
        # EDICT 2 steps, BDIA and O-BELM 4, Rex (RK4, 8 calls a step) 1, of 4 calls).
        assert invert["steps"] == sample["steps"] == max(calls // spec.step_calls(), 1), spec.title
        steps = invert["steps"]
        # Counted by the model wrapper, equal to the spec's count: inversion from a clean latent
        # pays the start, sampling from the inverted pair does not (measured: EDICT 4 and 4,
        # BDIA and O-BELM 4 and 3).
        assert invert["counted"] == spec.calls(steps, started=True), spec.title
        assert sample["counted"] == spec.calls(steps, started=False), spec.title
        assert invert["counted"] - sample["counted"] == spec.start_calls, spec.title
    with open(os.path.join(out, "cost.md")) as f:
        text = f.read()
    assert f"| KSampler | {calls} | {calls} | {calls} |" in text
    # Time per counted call against KSampler's is printed, not bounded: one round of runs of
    # 0.2 s each on a shared machine measured single ratios from 0.92 (idle) to 8.4 (other test
    # runs on both cores), so no bound near the idle figure (about 1.0) would hold. The timing
    # claim is the full run's (cost.md: five alternating rounds, medians).
    ratios = {name: r for (name, s), r in cost["ratios"].items() if s == size}
    print({name: round(r, 3) for name, r in ratios.items()})
    assert set(ratios) == set(cost_part.OPS) and ratios["KSampler"] == 1.0
    # Extra peak memory, in latent-sized buffers that grow with the picture (the fit's k):
    # measured EDICT 6 (invert) and 8 (sample), BDIA 10 and 10, O-BELM 8 and 8; bound 11. (The
    # cost part's target is 4, which no method meets: cost.md says "no".)
    fits = {name: round(slope, 2) for name, (_, slope) in cost["fits"].items()}
    print("buffers k", fits)
    assert set(fits) == {f"{m} {d}" for m in methods.EXACT for d in ("invert", "sample")}
    # Rex (RK4) holds its float64 pair, the first stage, the sum, one stage input and two
    # estimates: measured 15 (invert) and 17 (sample); bound 17.
    assert all(0 < k <= (17 if name.startswith("Rex") else 11) for name, k in fits.items()), fits
    for peaks, latent_bytes in cost["memory"].values():
        assert all(peak > 0 and blocks.startswith("1x ") for peak, _, blocks in peaks.values()) and latent_bytes > 0
    _assert_written(out, "cost")


def test_scaling_round_trips_and_rounding(bench_results):
    from bench import methods, scaling
    from edict_core.spec import SPECS

    out, results, summary = bench_results
    s = results["scaling"]
    assert len(s["lines"]) == len(methods.EXACT) + 2  # one steps fit per method, KSampler's and one batch fit
    print({(r["method"], r["steps"]): (r["error32"], f"{r['error64']:.2g}") for r in s["steps"]})
    # The float32 result of every round trip at cfg 7: measured 0; bound one float32 ulp.
    assert all(r["error32"] <= FLOAT32_ULP for r in s["steps"]), s["steps"]
    # The float64 result (the Sample record's branch): rounding only. Measured at 8 steps EDICT
    # 8.4e-15 (two unmixes dividing by p per step, and two calls), BDIA 4.9e-16, O-BELM 4.2e-16;
    # bounds about 4x those, and the part's threshold for a method with no figure here.
    bound64 = {"EDICT": 3e-14, "BDIA": 2e-15, "O-BELM": 2e-15}
    for r in s["steps"]:
        assert 0 < r["error64"] <= bound64.get(r["method"], scaling.ROUNDING_THRESHOLD), r
    assert all(steps is None for steps in s["onset"].values()), s["onset"]
    # EDICT's float64 rounding grows fastest (1/p^2 per step): measured 17x BDIA's and 20x
    # O-BELM's at 8 steps; bound 5x.
    at_last = {r["method"]: r["error64"] for r in s["steps"] if r["steps"] == s["last_steps"]}
    assert all(at_last["EDICT"] >= 5 * e for m, e in at_last.items() if m != "EDICT"), at_last
    # Batch: the round trip is exact at every batch, and KSampler ran the calls the round trip
    # counted (measured 3: BDIA's 2 prepared steps, 2 inverting + 1 sampling).
    batch_steps = run_sizes()["scaling"]["batch_steps"]
    spec = SPECS[methods.SPEC[scaling.BATCH_METHOD].name]
    trip_calls = spec.calls(batch_steps - 1, started=True) + spec.calls(batch_steps - 1, started=False)
    for r in s["batch"]:
        assert r["calls"] == trip_calls, r
        assert r["run"] == "KSampler" or r["error32"] <= FLOAT32_ULP, r
    _assert_written(out, "scaling")
    for method in methods.EXACT:
        assert f"DDIM/{method}" in summary and f"{method}'s float64 round trip" in summary
    assert "KSampler" in summary and "latent-sized buffers" in summary


def test_convergence_orders_and_exact_round_trips(bench_results):
    from bench import convergence as cv

    out, results, summary = bench_results
    c = results["convergence"]
    # RK4 at 200 against 400 steps: measured 3.4e-9 (cfg 1) and 7.8e-9 (cfg 7); bound 3e-8,
    # below every method's error by over 1000x (the smallest, BDIA 0.94 at 40 calls, 5e-5).
    print("reference", c["reference_check"])
    assert all(check <= 3e-8 for check in c["reference_check"].values())
    gen = {(r["method"], r["cfg"]): r for r in c["generation"]}
    print({k: (round(r["order_tail"], 2), [f"{e:.2g}" for _, e in r["points"]]) for k, r in gen.items()})
    # Orders (tail, >= 20 calls): measured O-BELM 1.99 / 1.98 (cfg 1 / 7), DDIM 0.97 / 0.98, BDIA
    # 1.0 (second order at gamma 1) 2.00 at cfg 1 (3.5 at cfg 7, not yet asymptotic); bounds +-0.2.
    for cfg in cv.CFGS:
        assert 1.8 <= gen[("O-BELM", cfg)]["order_tail"] <= 2.2, cfg
        assert 0.8 <= gen[("DDIM", cfg)]["order_tail"] <= 1.2, cfg
    assert 1.8 <= gen[("BDIA 1.0", 1.0)]["order_tail"] <= 2.2
    # At the most calls (40), O-BELM's error is 13x (cfg 1) and 14x (cfg 7) below DDIM's at the
    # same calls; bound 8x.
    for cfg in cv.CFGS:
        (calls, obelm), (ddim_calls, ddim) = gen[("O-BELM", cfg)]["points"][-1], gen[("DDIM", cfg)]["points"][-1]
        assert calls == ddim_calls and obelm * 8 <= ddim, (cfg, obelm, ddim)
    # Every call count is the spec's for the steps run (EDICT: 2 a step, so 10, 20, 40 calls
    # are 5, 10, 20 steps; the others 1).
    for (name, cfg), r in gen.items():
        if cv.METHODS[name] is not None:
            spec, settings = cv.METHODS[name]
            assert [c for c, _ in r["points"]] == [
                spec.calls(max(n // spec.step_calls(settings), 2), started=True, settings=settings)
                for n in run_sizes()["convergence"]["calls"]], name
    # Round trips (float32 in, float64 pair): measured 0 for every exact method at 10 and 20
    # steps (bound one float32 ulp); DDIM 0.13 / 0.071 (cfg 1) and 0.17 / 0.091 (cfg 7), bound 0.05.
    largest = max(run_sizes()["convergence"]["trip_steps"])
    for r in c["round_trip"]:
        print(r["method"], r["cfg"], r["errors"])
        if r["method"] == "DDIM":
            assert r["exact_to"] == 0 and min(r["errors"]) >= 0.05, r
        else:
            assert r["exact_to"] == largest and max(r["errors"]) <= FLOAT32_ULP, r
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


def test_model_part_measures_the_committed_model(bench_results):
    """The model part (bench/learned_model.py's run) loads the committed file (digest checked)
    and draws held-out captions: at quick size (8 captions, 10 steps, cfg 3) the figures are
    the same on every machine that runs the same float arithmetic; measured MODEL_QUICK."""
    from bench import learned_model as lm

    out, results, summary = bench_results
    m = results["model"]
    print(m["accuracy"])
    assert set(m["accuracy"]) == {3.0}
    for k, v in MODEL_QUICK.items():
        assert abs(m["accuracy"][3.0][k] - v) <= 1 / 8, (k, m["accuracy"][3.0][k], v)
    assert m["info"]["sha256"] in open(os.path.join(out, "learned_model.md")).read() or \
        m["info"]["sha256"][:12] in open(os.path.join(out, "learned_model.md")).read()
    assert "The learned model" in summary
    assert [e["sigma"] for e in m["mean_error"]] == list(lm.MEAN_SIGMAS)
    assert "The noise's mean" in open(os.path.join(out, "learned_model.md")).read()
    assert os.path.getsize(os.path.join(out, "learned_model.png")) > 1000


# The model part at quick size on the committed model (8 captions, 10 steps, cfg 3), 0.3.75.
MODEL_QUICK = {"color": 0.75, "shape": 0.625, "background": 0.875}


def test_edits_part_round_trips_are_exact_and_every_edit_is_judged(bench_results):
    """The edits part (bench/edits.py) on the committed learned model at quick size: every
    exact method's round trip returns the latent to float32 rounding (measured 0 at 6 steps,
    cfg 3), DDIM's does not (measured 3.54 and 19.9 latent MSE at denoise 0.8 and 1; bound half),
    and every method, SDEdit included, has a judged row per edit kind and denoise, whose hit rates
    over the 3 scenes are those measured on the committed model (EDITS_QUICK_HITS, within one scene)."""
    from bench import edits, methods

    out, results, summary = bench_results
    e = results["edits"]
    sizes = run_sizes()["edits"]
    trips = {(t["method"], t["denoise"]): t for t in e["trips"]}
    for denoise in sizes["denoises"]:
        for method in methods.EXACT:
            assert trips[(method, denoise)]["latent_mse"] <= FLOAT32_ULP, (method, denoise)
        assert trips[("DDIM", denoise)]["latent_mse"] >= EDITS_QUICK_DDIM_TRIP[denoise] / 2, denoise
    keys = {(r["method"], r["denoise"], r["kind"]) for r in e["rows"]}
    assert keys == {(m, d, k) for m in edits.METHODS for d in sizes["denoises"] for k in edits.KINDS}
    hits = {(r["method"], r["denoise"], r["kind"]): r["hit"] for r in e["rows"]}
    print(sorted(hits.items()))
    assert sum(abs(hits[k] - v) > 1 / 3 + 1e-9 for k, v in EDITS_QUICK_HITS.items()) == 0, hits
    assert set(e["accuracy"]) == {"color", "shape", "background"}
    assert "Edits on the learned model" in summary
    _assert_written(out, "edits")


# Measured on the committed learned model at quick size (3 scenes, 6 steps, cfg 3), 0.3.75.
EDITS_QUICK_DDIM_TRIP = {0.8: 3.54, 1.0: 19.9}
EDITS_QUICK_HITS = {
    ("EDICT", 0.8, "shape"): 1.0, ("EDICT", 1.0, "color"): 1 / 3, ("BDIA", 0.8, "color"): 1.0,
    ("DDIM", 1.0, "background"): 1 / 3, ("O-BELM", 0.8, "background"): 2 / 3, ("Rex", 0.8, "shape"): 0.0,
    ("Rex", 1.0, "shape"): 0.0, ("SDEdit", 0.8, "shape"): 1.0, ("SDEdit", 1.0, "color"): 1 / 3}


def test_controls_part_judges_every_row_and_the_exact_source_branch_ends_at_the_source(bench_results):
    """The controls part (bench/controls.py) at quick size: every method, control row and edit
    kind judged; with a control the exact method's source branch ends at the source latent
    (measured 6.5e-30 latent MSE, BDIA, 6 steps; bound 1e-28), DDIM's does not (measured 19.9 on the
    committed model; bound half); the record held per evaluation is counted."""
    from bench import controls, edits

    out, results, _ = bench_results
    c = results["controls"]
    sizes = run_sizes()["controls"]
    keys = {(r["method"], r["row"], r["kind"]) for r in c["rows"]}
    assert keys == {(m, row, k) for m in sizes["method_names"] for row in controls.ROWS for k in edits.KINDS}
    for (method, cfg, row), v in c["averaged"].items():
        if row == "plain":
            continue
        assert v["peak_bytes"] > 0
        if method == "DDIM":
            assert v["source_end"] > 19.9 / 2, (row, v)
        else:
            assert v["source_end"] < 1e-28, (method, row, v)
    _assert_written(out, "controls")


def test_a_partial_run_keeps_the_other_parts_headlines():
    """summary.md is every part's last headline: a run of one part replaces that part's lines
    and keeps the others' (summary.json), each named with the run it came from, in PARTS' order."""
    from bench import run

    earlier = {"cost": {"lines": ["- cost line"], "run": "2026-01-01 00:00, earlier"},
               "convergence": {"lines": ["- old convergence"], "run": "2026-01-01 00:00, earlier"}}
    text, merged = run.summary({"convergence": {"lines": ["new order line"]}}, 60.0, None, earlier)
    assert "- cost line\n\n(from an earlier run: 2026-01-01 00:00, earlier)" in text
    assert "new order line" in text and "old convergence" not in text
    assert text.index("cost line") < text.index("Order of convergence")
    assert merged["cost"] == earlier["cost"] and merged["convergence"]["run"] != earlier["convergence"]["run"]
