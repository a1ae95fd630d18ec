from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from latentzoo.data import load_dataset
from latentzoo.data.shapes import RELATIONS, SHAPE_NAMES, SPLIT_IDS, Scene, render_scene
from latentzoo.evaluation.shapes import (
    EVALUATION_STREAM,
    FAMILIES,
    check_prompt,
    detect_shapes,
    evaluate_shapes,
    prompt_scene,
    relation_holds,
    render_prompt,
    score_shapes,
    shapes_prompts,
)


@pytest.fixture(scope="module")
def prompts():
    return shapes_prompts(per_family=30, seed=0)


def of_family(prompts, family):
    return [p for p in prompts if p.family == family]


def scenes_for(prompts, seed=0):
    rng = np.random.default_rng(seed)
    return [prompt_scene(p, rng) for p in prompts]


@pytest.mark.parametrize("image_size", [32, 64])
def test_renders_of_the_prompts_score_on_every_family(prompts, image_size):
    rng = np.random.default_rng(1)
    images = [render_prompt(p, image_size, rng) for p in prompts]
    scores = score_shapes(images, prompts)
    assert set(scores) == {*FAMILIES, "overall", "correct"}
    for family in FAMILIES:
        assert scores[family] >= 0.99, family
    assert scores["overall"] >= 0.99 and len(scores["correct"]) == len(prompts)


def test_prompts_are_training_phrasings_of_their_scenes(prompts):
    for prompt, scene in zip(prompts, scenes_for(prompts), strict=True):
        assert prompt.prompt in scene.captions()


def test_swapped_colours_fail_color_binding(prompts):
    binding = of_family(prompts, "color_attribute_binding")
    for prompt, scene in zip(binding, scenes_for(binding), strict=True):
        a, b = scene.shapes
        swapped = Scene((replace(a, color=b.color), replace(b, color=a.color)), scene.relation)
        assert check_prompt(detect_shapes(render_scene(scene)), prompt)
        assert not check_prompt(detect_shapes(render_scene(swapped)), prompt)
        # two_objects checks only the kinds: the swap does not matter there
        assert check_prompt(detect_shapes(render_scene(swapped)), replace(prompt, family="two_objects"))


def test_mirrored_scenes_fail_position(prompts):
    position = of_family(prompts, "position")
    assert {p.relation for p in position} == set(RELATIONS)
    for prompt, scene in zip(position, scenes_for(position), strict=True):
        axis = RELATIONS[prompt.relation][1]
        mirrored = Scene(
            tuple(
                replace(
                    s, center=(1 - s.center[0], s.center[1]) if axis == 0 else (s.center[0], 1 - s.center[1])
                )
                for s in scene.shapes
            ),
            RELATIONS[prompt.relation][0],
        )
        assert check_prompt(detect_shapes(render_scene(scene)), prompt)
        assert not check_prompt(detect_shapes(render_scene(mirrored)), prompt)


def test_a_black_image_fails_every_family(prompts):
    black = torch.zeros(len(prompts), 3, 32, 32)
    assert detect_shapes(black[0]) == []
    scores = score_shapes(black, prompts)
    assert all(scores[family] == 0 for family in FAMILIES) and scores["overall"] == 0


def test_detection_recovers_every_dataset_scene():
    dataset = load_dataset("shapes", size=200, seed=0)
    images = (dataset.pixel_values + 1) / 2  # (200, 3, 32, 32) in [0, 1]
    for image, scene in zip(images, dataset.attributes["scenes"], strict=True):
        shapes = detect_shapes(image)
        assert Counter((s.kind, s.color, s.size) for s in shapes) == Counter(
            (s.kind, s.color, s.size) for s in scene.shapes
        )
        if scene.relation:
            a, b = ({(s.kind, s.color): s for s in shapes}[t.kind, t.color] for t in scene.shapes)
            assert relation_holds(a, b, scene.relation)
            assert not relation_holds(a, b, RELATIONS[scene.relation][0])
        for found, true in zip(sorted(shapes, key=str), sorted(scene.shapes, key=str), strict=True):
            assert np.allclose(found.center, true.center, atol=0.05)


def test_detection_takes_float_chw_and_uint8_hwc_alike():
    scene = load_dataset("shapes", size=4, seed=3).attributes["scenes"][3]
    array = render_scene(scene, 48)  # (48, 48, 3) uint8
    tensor = torch.tensor(array).permute(2, 0, 1).float() / 255
    assert detect_shapes(array) == detect_shapes(tensor) == detect_shapes(tensor.numpy())
    with pytest.raises(ValueError, match="`image`"):
        detect_shapes(torch.zeros(32, 32, 3))


def test_prompt_set_is_deterministic_and_balanced():
    prompts = shapes_prompts(per_family=60, seed=0)
    assert prompts == shapes_prompts(per_family=60, seed=0)
    assert prompts != shapes_prompts(per_family=60, seed=1)
    assert EVALUATION_STREAM not in SPLIT_IDS.values()  # a generator stream training never draws from
    assert Counter(p.family for p in prompts) == dict.fromkeys(FAMILIES, 60)

    def spread(counter, options=None):
        counts = [counter.get(o, 0) for o in options] if options else list(counter.values())
        return max(counts) - min(counts)

    single = of_family(prompts, "single_object")
    assert spread(Counter(p.objects[0].kind for p in single), SHAPE_NAMES) == 0
    counting = of_family(prompts, "counting")
    assert Counter(p.count for p in counting) == {1: 30, 2: 30}
    assert all(len(p.objects) == p.count and len({s.kind for s in p.objects}) == 1 for p in counting)
    colors = of_family(prompts, "colors")
    assert len({(p.objects[0].kind, p.objects[0].color) for p in colors}) == 18
    assert spread(Counter((p.objects[0].kind, p.objects[0].color) for p in colors)) <= 1
    position = of_family(prompts, "position")
    assert spread(Counter(p.relation for p in position), list(RELATIONS)) == 0
    for family in ("two_objects", "position", "color_attribute_binding"):
        pairs = Counter(tuple(s.kind for s in p.objects) for p in of_family(prompts, family))
        assert len(pairs) == 6 and spread(pairs) == 0, family  # ordered pairs of different kinds
    assert all(
        p.objects[0].color != p.objects[1].color for p in of_family(prompts, "color_attribute_binding")
    )


class RenderingPipeline:
    """Stands in for a text-to-image pipeline: draws each prompt exactly, placement seeded by its generator."""

    def __init__(self, prompts, image_size=32):
        self.specs = {p.prompt: p for p in prompts}
        self.image_size = image_size
        self.scheduler = DDIMScheduler()

    def __call__(self, prompt, generator, output_type, num_inference_steps, guidance_scale):
        assert output_type == "pt" and len(generator) == len(prompt)
        images = []
        for text, g in zip(prompt, generator, strict=True):
            rng = np.random.default_rng(int(torch.randint(2**31, (), generator=g)))
            images.append(render_prompt(self.specs[text], self.image_size, rng))
        return SimpleNamespace(images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255)


def test_evaluate_shapes_reports_the_protocol_and_ignores_batching():
    pipeline = RenderingPipeline(shapes_prompts(per_family=4, seed=5))
    result = evaluate_shapes(pipeline, per_family=4, seed=5, num_inference_steps=7, batch_size=5)
    assert result["metrics"] == {**dict.fromkeys(FAMILIES, 1.0), "overall": 1.0}
    for words in ("24 samples", "7 DDIMScheduler steps", "guidance scale 3.0", "seed 5", "seeds 5..28"):
        assert words in result["protocol"]
    batched = evaluate_shapes(pipeline, per_family=4, seed=5, num_inference_steps=7, batch_size=24)
    assert torch.equal(result["images"], batched["images"])


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="`per_family`"):
        shapes_prompts(per_family=0)
    with pytest.raises(ValueError, match="`images` and `prompts`"):
        score_shapes(torch.zeros(2, 3, 32, 32), shapes_prompts(per_family=1))
