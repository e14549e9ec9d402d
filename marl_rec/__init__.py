"""marl-rec: a recommendation platform as a multi-agent RL problem."""

__version__ = "0.1.0"


def cache_root():
    """marl-rec's one cache folder: ``$MARL_REC_CACHE_DIR``, else ``$XDG_CACHE_HOME/marl-rec``
    (``~/.cache/marl-rec``), with one subfolder per cache: ``numba/`` (the compiled simulator),
    ``text/`` (calibration's text embeddings), ``ray-sessions/`` (local Ray sessions to clean up)."""
    import os
    from pathlib import Path

    if os.environ.get("MARL_REC_CACHE_DIR"):
        return Path(os.environ["MARL_REC_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "marl-rec"
