"""kiebeam: training."""
