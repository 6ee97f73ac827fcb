"""An analytic diffusion model, wrapped as a real ComfyUI MODEL, whose exact denoiser is known.

Data: a class-conditional Gaussian mixture in a small latent space [C, H, W] (D = C*H*W
numbers). Class k is one isotropic Gaussian N(mu_k, s^2 I); the unconditional distribution
is the uniform mixture over the classes. At noise level sigma (x = x0 + sigma * n, ComfyUI's
sampler space) the minimum-MSE denoiser is in closed form:

    r_k(x)   = softmax_k( log pi_k - |x - mu_k|^2 / (2 (s^2 + sigma^2)) )
    D(x, s)  = sum_k r_k(x) * ( mu_k + s^2 / (s^2 + sigma^2) * (x - mu_k) )

The "network" inside a ComfyUI BaseModel computes exactly that, so the MODEL runs through
our nodes, ComfyUI's CFGGuider (cond and uncond batched) and KSampler like any checkpoint,
and a reconstruction or edit can be scored against the truth.

Choices:
- model_sampling is SD1.5's: EPS prediction on the discrete linear-beta schedule
  (sigma_min ~0.029, sigma_max ~14.6), so schedules and step sizes are the paper's.
- The network reads sigma itself from transformer_options["sigmas"] (set by ComfyUI's
  calc_cond_batch): the discrete `timestep` it is also given is rounded to an integer.
- Conditioning: a CONDITIONING tensor [1, 1, K] holding class weights, read from the
  cross-attention context. A one-hot row selects a class; all zeros is the unconditional
  mixture. CFG across classes is then plain ComfyUI CFG: positive = class, negative =
  unconditional.
- The latent format is ComfyUI's base LatentFormat (scale 1, 4 channels): LATENT samples
  are the data themselves.
"""

import math

import torch

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models_base


class GaussianClasses:
    """K isotropic Gaussian classes in [C, H, W]: means mu [K, C, H, W], std s (scalar)."""

    def __init__(self, num_classes=4, channels=4, size=4, class_std=0.5, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.shape = (channels, size, size)
        self.means = torch.randn((num_classes, *self.shape), generator=generator, dtype=torch.float64)
        self.std = float(class_std)

    @property
    def num_classes(self):
        return self.means.shape[0]

    def weights(self, context):
        """Class weights pi [B, K] from a context [B, T, K]; an all-zero row is uniform."""
        w = context[:, 0, :self.num_classes].to(torch.float64)
        total = w.sum(dim=1, keepdim=True)
        uniform = torch.full_like(w, 1.0 / self.num_classes)
        return torch.where(total > 0, w / total.clamp_min(1e-300), uniform)

    def denoise(self, x, sigma, weights):
        """The exact posterior mean E[x0 | x]. x [B, C, H, W] at noise levels sigma [B],
        weights pi [B, K]; float64 throughout. Returns [B, C, H, W]."""
        x, sigma = x.to(torch.float64), sigma.to(torch.float64).view(-1, 1)
        var = self.std ** 2 + sigma ** 2  # [B, 1]
        offsets = x.unsqueeze(1) - self.means.unsqueeze(0)  # [B, K, C, H, W]
        sq = offsets.flatten(2).pow(2).sum(-1)  # [B, K]
        log_r = torch.log(weights.clamp_min(1e-300)) - sq / (2 * var)
        r = torch.softmax(log_r, dim=1).view(*log_r.shape, 1, 1, 1)
        shrink = (self.std ** 2 / var).view(-1, 1, 1, 1, 1)
        return (r * (self.means.unsqueeze(0) + shrink * offsets)).sum(1)

    def log_density(self, x, sigma, weights):
        """log p_sigma(x) of the noised mixture, [B]: Tweedie's formula ties it to denoise
        (D = x + sigma^2 * grad log p), which the smoke test checks by autograd."""
        x = x.to(torch.float64)
        var = self.std ** 2 + sigma ** 2
        sq = (x.unsqueeze(1) - self.means.unsqueeze(0)).flatten(2).pow(2).sum(-1)
        d = x[0].numel()
        log_norm = -0.5 * d * math.log(2 * math.pi * var)
        return torch.logsumexp(torch.log(weights) - sq / (2 * var), dim=1) + log_norm

    def sample(self, classes, generator):
        """Exact data samples of the given classes [B] (long): [B, C, H, W] float64."""
        noise = torch.randn((len(classes), *self.shape), generator=generator, dtype=torch.float64)
        return self.means[classes] + self.std * noise

    def classify(self, x):
        """Most likely class of clean samples x [B, C, H, W] (equal priors): [B]."""
        sq = (x.to(torch.float64).unsqueeze(1) - self.means.unsqueeze(0)).flatten(2).pow(2).sum(-1)
        return sq.argmin(dim=1)

    def position(self, x, classes):
        """Where x sits inside class `classes`: the whitened offset (x - mu_k) / s."""
        return (x.to(torch.float64) - self.means[classes]) / self.std


class _ExactDenoiserNet(torch.nn.Module):
    """Stands where the UNet stands. Gets ComfyUI's scaled input c(sigma) * x and returns
    the EPS prediction (x - D(x, sigma)) / sigma, so ComfyUI's calculate_denoised gives back
    D(x, sigma) exactly (to float32 rounding of the output)."""

    def __init__(self, classes):
        super().__init__()
        self.classes = classes
        self.dtype = torch.float32
        # A buffer so ComfyUI's model management sees a (tiny) state dict to load.
        self.register_buffer("means", classes.means.to(torch.float32))

    def forward(self, xc, timesteps, context=None, transformer_options={}, **kwargs):
        # ComfyUI passes the un-batched sigmas [B]; cond and uncond are stacked [n * B].
        sigma = transformer_options["sigmas"].to(torch.float64)
        sigma = sigma.repeat(xc.shape[0] // sigma.shape[0])
        x = xc.to(torch.float64) * torch.sqrt(sigma ** 2 + 1.0).view(-1, 1, 1, 1)  # EPS: c = 1/sqrt(s^2+1)
        weights = self.classes.weights(context)
        denoised = self.classes.denoise(x, sigma, weights)
        return ((x - denoised) / sigma.view(-1, 1, 1, 1)).to(xc.dtype)


class _AnalyticConfig(comfy.supported_models_base.BASE):
    unet_config = {"disable_unet_model_creation": True}
    unet_extra_config = {}
    latent_format = comfy.latent_formats.LatentFormat
    sampling_settings = {"beta_schedule": "linear", "linear_start": 0.00085, "linear_end": 0.012}
    memory_usage_factor = 0.01


def analytic_model(classes):
    """A ComfyUI MODEL (ModelPatcher) whose denoiser is `classes`' exact one."""
    config = _AnalyticConfig({"disable_unet_model_creation": True})
    base = comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.EPS)
    base.diffusion_model = _ExactDenoiserNet(classes)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(base, load_device=device,
                                            offload_device=comfy.model_management.unet_offload_device())


def class_conditioning(classes, labels):
    """CONDITIONING selecting a class: `labels` an int (the whole batch) or a tensor [B]
    (one class per sample; ComfyUI keeps a cond batch that matches the latent's)."""
    labels = torch.as_tensor(labels).reshape(-1)
    rows = torch.nn.functional.one_hot(labels, classes.num_classes).to(torch.float32)
    return [[rows.unsqueeze(1), {}]]


def unconditional(classes):
    """CONDITIONING of the unconditional mixture (all-zero weights)."""
    return [[torch.zeros(1, 1, classes.num_classes), {}]]


def latent(x):
    """A LATENT dict from data [B, C, H, W]."""
    return {"samples": x.to(torch.float32)}
