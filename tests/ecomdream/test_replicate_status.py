"""What the journey is told about a Replicate training or prediction, from the API's or a webhook's body."""

from __future__ import annotations

from ecomdream.clients.replicate import prediction_status, training_status


def test_a_finished_training_carries_its_model_version_and_final_progress() -> None:
    status = training_status(
        {
            "id": "t1",
            "status": "succeeded",
            "output": {"version": "ecomdream/model:abc", "weights": "https://x/weights.tar"},
            "logs": "flux_train:  41%|████      | 410/1000\nflux_train: 100%|██████████| 1000/1000",
        }
    )
    assert (status.status, status.model_version, status.error) == ("succeeded", "ecomdream/model:abc", None)
    assert status.progress == 1.0


def test_a_training_that_succeeded_without_a_model_is_a_failure_not_a_ready_model() -> None:
    status = training_status({"id": "t2", "status": "succeeded", "output": {"weights": "https://x/w.tar"}})
    assert status.status == "failed"
    assert status.finished
    assert status.error == "Replicate finished the training but returned no model version"


def test_a_failed_training_keeps_replicates_reason() -> None:
    status = training_status({"id": "t3", "status": "failed", "error": "CUDA out of memory", "output": None})
    assert (status.status, status.error, status.model_version) == ("failed", "CUDA out of memory", None)


def test_prediction_output_as_a_list_or_a_single_url() -> None:
    many = prediction_status(
        {"id": "p1", "status": "succeeded", "output": ["https://x/0.png", "https://x/1.png"]}
    )
    one = prediction_status({"id": "p2", "status": "succeeded", "output": "https://x/0.png"})
    assert many.output == ("https://x/0.png", "https://x/1.png")
    assert one.output == ("https://x/0.png",)
