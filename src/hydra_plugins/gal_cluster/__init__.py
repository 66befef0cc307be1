"""Launchers of this project, in the namespace where Hydra looks for plugins (``hydra/launcher=slurm``)."""

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from gal.cluster import check_slurm_request


class CheckedSlurmLauncher(SlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher, with gal.cluster's check before the first submission."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        try:
            check_slurm_request(self.params)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None  # one line, not Hydra's traceback of its own frames
        return super().launch(job_overrides, initial_job_idx)
