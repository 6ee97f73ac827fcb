"""The pack in a real ComfyUI server: /object_info lists the nodes, and an API-format
workflow (load checkpoint -> encode -> EDICT Invert -> EDICT Sample -> Latent Pair Mix ->
decode -> save) runs to a saved image. What the UI hears over the websocket: progress per
step, a Cancel (/interrupt) that stops a 200-step run within a step, and readable errors."""

import os
import time
import uuid

from PIL import Image

from edict_core.spec import SPECS
from harness.comfy import CKPT_NAME
from harness.server import cached_nodes
from harness.workflows import INPUT_IMAGE, adapted, api_prompt, nodes_of_type, run_again, source_nodes

COMMON_INPUTS = ["model", "positive", "negative", "latent_image", "steps", "cfg", "scheduler", "denoise"]
# Every method of the spec: its Invert and Sample nodes take KSampler's inputs and its settings.
NODE_INPUTS = {name: inputs for spec in SPECS.values() for name, inputs in (
    (spec.node_id("Invert"), COMMON_INPUTS + list(spec.defaults)),
    (spec.node_id("Sample"), COMMON_INPUTS[:4] + ["seed"] + COMMON_INPUTS[4:] + list(spec.defaults)))}
NODE_INPUTS["LatentPairMix"] = ["latent", "weight"]


def edit_prompt(steps=6):
    common = {"model": ["1", 0], "steps": steps, "cfg": 3.0, "scheduler": "normal", "denoise": 0.8,
              "mix_weight": 0.93, "leapfrog": True}
    return {
        **source_nodes(),
        "7": {"class_type": "EDICTInvert", "inputs": {**common, "positive": ["2", 0], "negative": ["4", 0],
                                                       "latent_image": ["6", 0]}},
        "8": {"class_type": "EDICTSample", "inputs": {**common, "positive": ["3", 0], "negative": ["4", 0],
                                                       "latent_image": ["7", 0], "seed": 0}},
        "9": {"class_type": "LatentPairMix", "inputs": {"latent": ["8", 0], "weight": 0.5}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "edict_edit"}},
    }


def test_object_info_lists_every_node_with_its_inputs(server):
    info = server.get("/object_info")
    for name, inputs in NODE_INPUTS.items():
        assert name in info, f"{name} missing from /object_info"
        node = info[name]
        assert node["category"] == "sampling/exact inversion"
        assert node["description"]
        assert node["output"] == ["LATENT"] and node["output_tooltips"][0]
        required = node["input"]["required"]
        assert list(required) == inputs
        for input_name, spec in required.items():
            assert spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
    for spec in SPECS.values():
        for role in ("Invert", "Sample"):
            node = info[spec.node_id(role)]
            assert node["display_name"] == f"{spec.title} {role}"
            required = node["input"]["required"]
            assert required["scheduler"][1]["default"] == spec.scheduler
            assert {name: required[name][1]["default"] for name in spec.defaults} == spec.defaults
    assert info["EDICTSample"]["input"]["required"]["mix_weight"][1]["default"] == 0.93
    assert info["BDIASample"]["input"]["required"]["gamma"][1]["default"] == 0.94
    assert info["OBELMInvert"]["input"]["required"]["scheduler"][1]["default"] == "karras"


def test_edit_workflow_runs_and_saves_an_image(server):
    entry = server.run_prompt(edit_prompt())
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = entry["outputs"]["11"]["images"]
    assert len(images) == 1
    path = os.path.join(server.base, "output", images[0]["subfolder"], images[0]["filename"])
    with Image.open(path) as saved:
        assert saved.size == (64, 64)
        assert len(saved.getcolors(64 * 64)) > 10  # a picture, not a flat fill


def test_node_error_reaches_the_client_and_the_server_keeps_serving(server):
    prompt = edit_prompt()
    prompt["9"]["inputs"]["latent"] = ["6", 0]  # a plain latent where a pair is required
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "error"
    messages = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert "Latent Pair Mix: input 'latent'" in messages[0][1]["exception_message"]
    assert server.run_prompt(edit_prompt(steps=5))["status"]["status_str"] == "success"


def example(name, steps):
    return adapted(api_prompt(name), ckpt=CKPT_NAME, image=INPUT_IMAGE, steps=steps)


def wait_for(messages, kind, prompt_id, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for message in messages:
            if message["type"] == kind and message["data"].get("prompt_id") == prompt_id:
                return message["data"]
        time.sleep(0.05)
    raise TimeoutError(f"no {kind} for {prompt_id}; heard {[m['type'] for m in messages][-20:]}")


def saved_pixels(server, entry):
    return [Image.open(os.path.join(server.base, "output", image["subfolder"], image["filename"])).tobytes()
            for output in entry["outputs"].values() for image in output.get("images", [])
            if image["type"] == "output"]


def test_cancel_stops_a_200_step_run_within_a_step_and_the_next_run_is_correct(server):
    before = server.run_prompt(example("edict_edit", steps=3))
    client_id = uuid.uuid4().hex
    messages = server.listen(client_id)
    prompt = example("edict_edit", steps=200)
    invert = nodes_of_type(prompt, "EDICTInvert")[0]
    prompt_id = server.post("/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]

    def steps_done():
        return [m["data"]["value"] for m in list(messages)
                if m["type"] == "progress" and m["data"]["node"] == invert]

    deadline = time.time() + 120
    while len(steps_done()) < 3 and time.time() < deadline:
        time.sleep(0.02)
    steps_at_cancel = max(steps_done())
    server.post("/interrupt", {})
    stopped = wait_for(messages, "execution_interrupted", prompt_id)

    assert stopped["node_id"] == invert
    progress = steps_done()
    # 199 run: normal's last step, sigma_min to 0, is not (exact methods end at sigma_min)
    assert progress[:3] == [1, 2, 3] and all(m["data"]["max"] == 199 for m in messages if m["type"] == "progress")
    # the step in flight when Cancel arrived may finish (and the next report may have been in flight)
    assert max(progress) <= steps_at_cancel + 2 < 199
    status = server.get(f"/history/{prompt_id}")[prompt_id]["status"]
    assert status["status_str"] == "error"
    assert "execution_interrupted" in [kind for kind, _ in status["messages"]]
    # nothing left behind: the same small edit, run in full again, gives the same image
    after = server.run_prompt(run_again(example("edict_edit", steps=3), 1))
    assert after["status"]["status_str"] == "success"
    assert not cached_nodes(after) & {*nodes_of_type(prompt, "EDICTInvert"), *nodes_of_type(prompt, "EDICTSample")}
    assert saved_pixels(server, after) == saved_pixels(server, before) != []


def error_message(server, prompt):
    """The execution_error the UI receives for the prompt (the text of its error dialog)."""
    client_id = uuid.uuid4().hex
    messages = server.listen(client_id)
    prompt_id = server.post("/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]
    error = wait_for(messages, "execution_error", prompt_id)
    return error["node_type"], error["exception_message"].strip()


def test_an_edict_inverted_latent_into_bdia_sample_says_what_to_connect(server):
    prompt = example("bdia_edit", steps=3)
    invert = prompt[nodes_of_type(prompt, "BDIAInvert")[0]]
    invert["class_type"] = "EDICTInvert"
    del invert["inputs"]["gamma"]
    invert["inputs"].update(mix_weight=0.93, leapfrog=True)
    assert error_message(server, prompt) == (
        "BDIASample", "BDIA Sample: input 'latent_image': it was inverted with EDICT Invert. "
        "Connect it to EDICT Sample, or invert with BDIA Invert.")


def test_a_latent_inverted_with_one_model_type_and_sampled_with_another_is_named(server):
    prompt = example("edict_edit", steps=3)
    loader = nodes_of_type(prompt, "CheckpointLoaderSimple")[0]
    prompt["v_model"] = {"class_type": "ModelSamplingDiscrete",
                         "inputs": {"model": [loader, 0], "sampling": "v_prediction", "zsnr": False}}
    prompt[nodes_of_type(prompt, "EDICTSample")[0]]["inputs"]["model"] = ["v_model", 0]
    node_type, message = error_message(server, prompt)
    assert node_type == "EDICTSample"
    assert message.startswith("EDICT Sample: input 'model': latent_image was inverted with a EPS model, "
                              "but this model is V_PREDICTION.")
    assert "Connect the same model" in message


def obelm_on_a_drifting_schedule(steps=4):
    """The O-BELM example edit on normal at denoise 0.5, a schedule along which O-BELM's edits
    drift: its Invert node warns (and still runs). Returns (prompt, Invert node id)."""
    prompt = example("obelm_edit", steps=steps)
    for node_id in nodes_of_type(prompt, "OBELMInvert") + nodes_of_type(prompt, "OBELMSample"):
        prompt[node_id]["inputs"].update(scheduler="normal", denoise=0.5)
    return prompt, nodes_of_type(prompt, "OBELMInvert")[0]


def test_a_warning_reaches_the_ui_as_the_nodes_text(server):
    """Users see the UI, not the log: a warning goes to the node that raised it as its text
    (PromptServer.send_progress_text), which the frontend shows on the node."""
    prompt, invert = obelm_on_a_drifting_schedule()
    client_id = uuid.uuid4().hex
    messages = server.listen(client_id)
    prompt_id = server.post("/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]
    wait_for(messages, "execution_success", prompt_id)
    texts = [m["data"]["text"] for m in list(messages) if m["type"] == "progress_text"]
    on_invert = [m["data"]["text"] for m in list(messages)
                 if m["type"] == "progress_text" and m["data"]["node"] == invert]
    print(f"\n[notice] {on_invert}")
    assert len(on_invert) == 1 and len(texts) == 1
    assert "this schedule's steps barely shrink toward the clean end" in on_invert[0]
    assert "For edits use the karras or exponential scheduler" in on_invert[0]
