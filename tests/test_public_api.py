import os
import foveal


def test_exported_members():
    assert sorted(foveal.__all__) == sorted(
        ["Document", "Engine", "FovealError", "Hit", "IndexConfig", "Pipeline", "SearchRequest", "SearchResponse",
         "parse_document", "__version__"]
    )
    for name in foveal.__all__:
        assert getattr(foveal, name) is not None


def test_importing_foveal_makes_openmp_threads_sleep_unless_the_operator_chose():
    """OMP_WAIT_POLICY=PASSIVE before torch and FAISS start OpenMP (their spinning threads slowed each other by
    about a third on one search); an operator's own value is kept."""
    import subprocess
    import sys

    code = "import os, foveal, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"
