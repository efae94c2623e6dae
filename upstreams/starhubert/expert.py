"""S3PRL expert for STaRHuBERT: the shared student upstream, fixed to this family."""

from recycle_distill.s3prl.upstream import StudentUpstream


class UpstreamExpert(StudentUpstream):
    family = "starhubert"
