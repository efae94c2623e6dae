"""S3PRL expert for STaRHuBERT: the shared student upstream, fixed to this family."""

from recycle_distill.expert import StudentUpstream


class UpstreamExpert(StudentUpstream):
    family = "starhubert"
