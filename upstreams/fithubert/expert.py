"""S3PRL expert for FitHuBERT: the shared student upstream, fixed to this family."""

from recycle_distill.s3prl.upstream import StudentUpstream


class UpstreamExpert(StudentUpstream):
    family = "fithubert"
