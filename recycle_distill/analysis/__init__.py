"""Small measurement helpers: representation similarity (CKA, cosine) and k-means."""

from .kmeans import assign_clusters, kmeans
from .similarity import linear_cka, mean_frame_cosine

__all__ = ["linear_cka", "mean_frame_cosine", "kmeans", "assign_clusters"]
