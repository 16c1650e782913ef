"""The meta-controller (DynaICL, Zhou et al. 2023): per input, how likely is the model to be right with each
candidate number of demonstrations? Trained on held-back labeled examples run at every candidate count.

A scikit-learn estimator: hyperparameters in ``__init__``, fitted attributes end in ``_``, ``fit`` returns
self. One logistic regression per candidate count over cheap serving-time features (``controller.features``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from controller.allocator import allocate, smallest_sufficient
from controller.features import N_SCALAR_FEATURES


class MetaController(BaseEstimator):
    """Predicts P(correct | input, k) for each k in ``candidate_k``.

    Parameters
    ----------
    candidate_k : the demonstration counts the controller chooses among.
    C : inverse regularisation strength of each count's logistic regression.
    tolerance : without a budget, an input gets the smallest count whose expected accuracy is within this
        much of the reference count's: the count most accurate on the training examples. (Comparing with each
        input's own best count instead compares with the largest of several noisy estimates, which favours
        large counts; bench/controller_offline.py measured it spending more tokens than the best fixed count.)
    embedding_dims : principal components of the input's embedding kept as features (None: the whole
        embedding; 0: none, the neighbourhood and length features only). The last ``N_SCALAR_FEATURES``
        columns of X are those; the columns before them are the embedding.
    """

    def __init__(self, candidate_k: Sequence[int] = (0, 1, 2, 4, 8), C: float = 1.0, tolerance: float = 0.02,
                 embedding_dims: int | None = 8) -> None:
        self.candidate_k = candidate_k
        self.C = C
        self.tolerance = tolerance
        self.embedding_dims = embedding_dims

    def _reduce(self, X: np.ndarray) -> np.ndarray:
        if getattr(self, "embedding_dims", None) is None:  # also controllers pickled before the option existed
            return X
        scalars = X[:, -N_SCALAR_FEATURES:]
        if self.pca_ is None:
            return scalars
        return np.hstack([self.pca_.transform(X[:, :-N_SCALAR_FEATURES]), scalars])

    def fit(self, X: np.ndarray, Y: np.ndarray) -> MetaController:
        """X: (n, n_features) features; Y: (n, len(candidate_k)), 1 where the model was right at that count."""
        X, Y = validate_data(self, X, Y, multi_output=True, y_numeric=True)
        Y = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
        if Y.shape[1] != len(self.candidate_k):
            raise ValueError(f"Y has {Y.shape[1]} columns, one per candidate count {list(self.candidate_k)} expected")
        self.candidate_k_ = np.asarray(self.candidate_k, dtype=np.int64)
        self.pca_: PCA | None = None
        dims = self.embedding_dims
        if dims:
            self.pca_ = PCA(n_components=min(dims, X.shape[1] - N_SCALAR_FEATURES, len(X)), random_state=0)
            self.pca_.fit(X[:, :-N_SCALAR_FEATURES])
        X = self._reduce(X)
        template = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000))
        self.models_: list[object] = []
        for column in Y.T:
            if np.unique(column).size < 2:  # always right or always wrong at this count: a constant
                self.models_.append(float(column.mean()))
            else:
                self.models_.append(clone(template).fit(X, column.astype(int)))
        self.train_accuracy_ = Y.mean(axis=0)
        return self

    def choose(self, expected: np.ndarray, costs: np.ndarray, budget: int | None = None) -> np.ndarray:
        """Index into ``candidate_k`` per input, from ``predict_proba``'s output and each option's cost: within
        ``budget`` when given, otherwise the cheapest count expected to be as good as the reference count."""
        if budget is not None:
            return allocate(expected, costs, budget)
        return smallest_sufficient(expected, costs, self.tolerance, int(np.argmax(self.train_accuracy_)))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, len(candidate_k)) expected accuracy of each count for each input."""
        check_is_fitted(self)
        X = self._reduce(validate_data(self, X, reset=False))
        columns = [np.full(len(X), m) if isinstance(m, float) else m.predict_proba(X)[:, 1] for m in self.models_]
        return np.stack(columns, axis=1)

    def predict(self, X: np.ndarray, costs: np.ndarray | None = None, budget: int | None = None) -> np.ndarray:
        """The chosen count per input: within ``budget`` tokens when given (``costs``: (n, K) prompt tokens),
        otherwise the smallest count expected to be as good as the best."""
        p = self.predict_proba(X)
        if costs is None:
            costs = np.broadcast_to(self.candidate_k_.astype(np.float64), p.shape)
        return self.candidate_k_[self.choose(p, costs, budget)]
