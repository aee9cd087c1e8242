"""One rule matches a model's categories with a project's or a file's: by name, never by id."""

from app.core.types import Category
from app.ml.categories import categories_keeping_heads, match_categories, model_labels

NUCLEUS, CELL = Category(1, "nucleus"), Category(2, "cell")


def test_names_match_case_folded_and_ids_never_decide() -> None:
    project = [Category(5, "Cell"), Category(3, "Nucleus"), Category(9, "debris")]
    assert match_categories([NUCLEUS, CELL], project) == {1: 3, 2: 5}
    assert model_labels([NUCLEUS, CELL], project) == {3: 1, 5: 2}
    # Same ids, other names: no match (except one category on each side).
    assert match_categories([NUCLEUS, CELL], [Category(1, "a"), Category(2, "b")]) == {}
    assert match_categories([NUCLEUS], [Category(4, "object")]) == {1: 4}


def test_heads_are_kept_only_for_the_same_set_of_categories() -> None:
    ordered = categories_keeping_heads([NUCLEUS, CELL], [Category(7, "cell"), Category(3, "nucleus")])
    assert ordered == [Category(3, "nucleus"), Category(7, "cell")]  # the model's label order
    assert categories_keeping_heads([NUCLEUS], [Category(3, "nucleus")]) == [Category(3, "nucleus")]
    assert categories_keeping_heads([NUCLEUS], [Category(3, "nucleus"), Category(4, "x")]) is None
    assert categories_keeping_heads([NUCLEUS, CELL], [Category(1, "nucleus")]) is None
