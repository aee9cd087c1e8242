import numpy as np
import pytest
import torch

from app.errors import MaskLoopError
from app.ml.preprocess import InputSpec, InputSpecError, to_model_input


def test_uint8_gray_is_divided_by_255_and_repeated():
    img = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    out = to_model_input(img, InputSpec())
    assert out.dtype == torch.float32 and out.shape == (3, 2, 2)
    assert torch.allclose(out[0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_uint16_uses_percentile_stretch():
    img = np.arange(1000, dtype=np.uint16).reshape(20, 50) * 60
    out = to_model_input(img, InputSpec(percentiles=(1.0, 99.0)))
    lo, hi = np.percentile(img.astype(np.float32), (1.0, 99.0))
    expected = np.clip((img.astype(np.float32) - lo) / (hi - lo), 0, 1)
    assert np.allclose(out[0].numpy(), expected, atol=1e-6)
    assert out.min() == 0.0 and out.max() == 1.0


def test_rgba_drops_alpha_and_keeps_colour():
    img = np.zeros((4, 5, 4), dtype=np.uint8)
    img[..., 0] = 255
    img[..., 3] = 7
    out = to_model_input(img, InputSpec())
    assert out.shape == (3, 4, 5)
    assert out[0].min() == 1.0 and out[1].max() == 0.0 and out[2].max() == 0.0


def test_gray_channel_mode_averages_colour():
    img = np.zeros((2, 2, 3), dtype=np.uint8)
    img[..., 0] = 255
    out = to_model_input(img, InputSpec(channels="gray", normalize="fixed", low=0, high=255))
    assert torch.allclose(out, torch.full((3, 2, 2), 1 / 3))


def test_minmax_fixed_flat_and_nan():
    img = np.array([[2.0, 4.0], [np.nan, 6.0]], dtype=np.float64)
    mm = to_model_input(img, InputSpec(normalize="minmax"))[0].numpy()
    assert np.allclose(mm, [[0.0, 0.5], [0.0, 1.0]])
    fx = to_model_input(img, InputSpec(normalize="fixed", low=0, high=8))[0].numpy()
    assert np.allclose(fx, [[0.25, 0.5], [0.0, 0.75]])
    flat = to_model_input(np.full((3, 3), 9, dtype=np.uint16), InputSpec())
    assert torch.all(flat == 0) and torch.isfinite(flat).all()


def test_bool_image():
    out = to_model_input(np.eye(3, dtype=bool), InputSpec())
    assert torch.equal(out[1], torch.eye(3))


def test_dict_round_trip():
    spec = InputSpec(min_size=512, max_size=1024, percentiles=(0.5, 99.5))
    d = spec.to_dict()
    assert d["percentiles"] == [0.5, 99.5]
    assert InputSpec.from_dict(d) == spec


@pytest.mark.parametrize(
    "kwargs",
    [
        {"normalize": "zscore"},
        {"channels": "bgr"},
        {"normalize": "fixed", "low": 5.0},
        {"percentiles": (99.0, 1.0)},
        {"min_size": 900, "max_size": 800},
        {"min_size": 16, "max_size": 96},
        {"min_size": 800, "max_size": 100_000},
        {"min_size": 512.0, "max_size": 512},
        {"min_size": True, "max_size": 512},
    ],
)
def test_invalid_specs_raise_typed_errors(kwargs):
    with pytest.raises(InputSpecError) as info:
        InputSpec(**kwargs)
    assert isinstance(info.value, MaskLoopError)


def test_unknown_key_and_bad_shape():
    with pytest.raises(InputSpecError, match="colour_space"):
        InputSpec.from_dict({"colour_space": "lab"})
    with pytest.raises(InputSpecError, match="shape"):
        to_model_input(np.zeros((2, 3, 3, 3), dtype=np.uint8), InputSpec())


def test_image_spec_fixes_the_stretch_to_model_input_applies():
    import numpy as np
    import torch

    from app.ml.preprocess import InputSpec, image_spec, to_model_input

    rng = np.random.default_rng(0)
    image = rng.integers(100, 4000, (40, 50), dtype=np.uint16)
    for spec in (InputSpec(), InputSpec(normalize="minmax"), InputSpec(channels="gray")):
        fixed = image_spec(image, spec)
        assert fixed.normalize == "fixed"
        assert torch.equal(to_model_input(image, spec), to_model_input(image, fixed))
    assert image_spec(image.astype(np.uint8), InputSpec()) == InputSpec()  # pixel-wise
    assert image_spec(image > 2000, InputSpec()) == InputSpec()


def test_auto_invert_turns_dark_on_light_into_light_on_dark():
    import numpy as np

    from app.ml.preprocess import InputSpec, image_spec, to_model_input

    spec = InputSpec(channels="gray", normalize="percentile", invert="auto")
    fluorescence = np.full((32, 32), 10, dtype=np.uint8)
    fluorescence[8:16, 8:16] = 200
    brightfield = np.stack([255 - fluorescence] * 3, axis=2)  # dark nucleus, light background
    a = to_model_input(fluorescence, spec)
    b = to_model_input(brightfield, spec)
    assert a.shape == b.shape == (3, 32, 32)
    assert float(a[0, 10, 10]) > 0.9 and float(a[0, 0, 0]) < 0.1
    assert np.allclose(a.numpy(), b.numpy(), atol=1e-6)  # the same picture to the model
    # One image's decision is fixed for all of its tiles: a bright-only tile stays inverted.
    fixed = image_spec(brightfield, spec)
    assert fixed.invert == "always" and image_spec(fluorescence, spec).invert == "none"
    tile = brightfield[:8, :8]
    assert float(to_model_input(tile, fixed)[0].max()) < 0.1
    assert InputSpec().invert == "none"  # cards without the key keep their conversion


def test_two_channel_images_use_the_cards_channel():
    """Fluorescence stacks such as nuclei + cytoplasm are inputs, not errors: the model sees
    the card's ``input.channel`` (default 0), the same plane in training and proposing."""
    import numpy as np

    from app.ml.preprocess import InputSpec, InputSpecError, image_spec, to_model_input

    nuclei = np.zeros((16, 16), np.uint16)
    nuclei[4:8, 4:8] = 3000
    cytoplasm = np.full((16, 16), 500, np.uint16)
    stack = np.stack([nuclei, cytoplasm], axis=2)
    first = to_model_input(stack, InputSpec())
    assert np.allclose(first.numpy(), to_model_input(nuclei, InputSpec()).numpy())
    second = to_model_input(stack, InputSpec(channel=1))
    assert np.allclose(second.numpy(), to_model_input(cytoplasm, InputSpec()).numpy())
    assert image_spec(stack, InputSpec(channel=1)).normalize == "fixed"
    five = np.stack([nuclei] * 5, axis=2)
    assert to_model_input(five, InputSpec(channel=4)).shape == (3, 16, 16)
    with pytest.raises(InputSpecError, match="channel 2, but the image has 2 channels"):
        to_model_input(stack, InputSpec(channel=2))
    with pytest.raises(InputSpecError, match="channel"):
        InputSpec(channel=-1)
    assert InputSpec.from_dict({"channel": 1}).channel == 1


def _stained_tissue() -> tuple[np.ndarray, np.ndarray]:
    """An H&E-like picture: a purple nucleus, pink-red stroma over most of it, white gaps.
    Returns the RGB image and the nucleus mask."""
    image = np.empty((40, 40, 3), dtype=np.uint8)
    image[:] = (225, 60, 90)  # eosin-stained stroma: passes red, absorbs green
    image[:, 30:] = (240, 235, 240)  # background
    image[10:20, 10:20] = (95, 60, 150)  # hematoxylin-stained nucleus: absorbs red
    nucleus = np.zeros((40, 40), dtype=bool)
    nucleus[10:20, 10:20] = True
    return image, nucleus


def test_stain_mode_shows_a_nucleus_on_stroma_brighter_than_the_stroma():
    from app.ml.preprocess import image_spec

    image, nucleus = _stained_tissue()
    gray = InputSpec(channels="gray", normalize="percentile", invert="auto")
    stain = InputSpec(channels="stain", normalize="percentile", invert="auto")
    averaged = to_model_input(image, gray)[0].numpy()
    red = to_model_input(image, stain)[0].numpy()
    stroma = ~nucleus
    stroma[:, 30:] = False
    # The average makes the stroma as dark as the nucleus, and the image is not inverted.
    assert averaged[nucleus].mean() <= averaged[stroma].mean() + 0.1
    assert red[nucleus].min() > 0.9 and red[stroma].max() < 0.2 and red[:, 30:].max() < 0.1
    fixed = image_spec(image, stain)
    assert fixed.invert == "always" and fixed.normalize == "fixed"
    assert torch.equal(to_model_input(image, fixed), to_model_input(image, stain))
    tile = to_model_input(image[:8, :8], fixed)  # a stroma-only tile maps as in the image
    assert torch.equal(tile, to_model_input(image, stain)[:, :8, :8])


def test_stain_mode_keeps_grey_and_dark_background_colour_images_as_gray_mode():
    gray = InputSpec(channels="gray", normalize="percentile", invert="auto")
    stain = InputSpec(channels="stain", normalize="percentile", invert="auto")
    rng = np.random.default_rng(3)
    plane = rng.integers(0, 60, (24, 24), dtype=np.uint8)
    plane[4:12, 4:12] = 220
    colour = np.zeros((24, 24, 3), dtype=np.uint8)
    colour[..., 2] = plane  # a nuclear stain shown in blue: the red plane is empty
    for image in (plane, colour, np.stack([plane] * 3, axis=2)):
        assert torch.equal(to_model_input(image, stain), to_model_input(image, gray))
    image, _ = _stained_tissue()
    never = InputSpec(channels="stain", normalize="percentile", invert="none")
    assert torch.equal(
        to_model_input(image, never),
        to_model_input(image, InputSpec(channels="gray", normalize="percentile")),
    )
