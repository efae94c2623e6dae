"""S3PRL expert for MaskHuBERT: the shared student upstream, fixed to this family."""

from recycle_distill.expert import StudentUpstream


class UpstreamExpert(StudentUpstream):
    family = "maskhubert"
