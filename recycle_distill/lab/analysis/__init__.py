"""Small measurement helpers: representation similarity (CKA, cosine) and k-means."""

from recycle_distill.lab.analysis.kmeans import assign_clusters, kmeans
from recycle_distill.lab.analysis.similarity import linear_cka, mean_frame_cosine

__all__ = ["linear_cka", "mean_frame_cosine", "kmeans", "assign_clusters"]
