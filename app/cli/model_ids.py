"""The model a command line names: a zoo/user card id, or a project version "v<N>"."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.core.store import ProjectStore
    from app.ml.zoo import ModelCard


def model_card(store: ProjectStore | None, model_id: str) -> ModelCard:
    """The card of ``model_id``; a project version needs its row in the store.

    Files a killed training run left without their row are not a version, so they are
    never run (the row is committed last).
    """
    from app.ml import zoo
    from app.ml.versions import version_id

    number = version_id(model_id)
    if store is not None and number is not None:
        versions = store.model_versions()
        if number not in {v.id for v in versions}:
            known = ", ".join(f"v{v.id}" for v in versions) or "none yet"
            raise zoo.ModelNotFoundError(
                f"The project {store.root} has no model version {model_id} (versions: {known})."
            )
    return zoo.get_card(model_id, store.root if store is not None else None)
