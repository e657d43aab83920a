"""llama.cpp as a library, for the Python scripts that need its logits or its
tokenizer (scripts/ref_llamacpp.py, ref_tokenize.py, the --compare options of
the numpy references): llama-cpp-python 0.3.36's own bindings over the
libllama.so that scripts/setup_peers.sh builds from the same sdist, in the
reference Python that `bash scripts/setup_peers.sh --python` makes
(peers/venv: pinned numpy, gguf and the bindings' dependencies).

    import peer
    llama_cpp = peer.llama_cpp()

sets both up on first use (the library only, --lib: a no-op afterwards, and
after a full build) and, when the running
interpreter is not that venv, runs the calling script again under it with the
same arguments, so `python3 scripts/ref_llamacpp.py ...` works from any
Python. Call it before any work the script does.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "peers", "venv")
VERSION = "0.3.36"


def llama_cpp():
    setup = os.path.join(ROOT, "scripts", "setup_peers.sh")
    subprocess.run(["bash", setup, "--python", "--lib", "--quiet"], check=True, stdout=sys.stderr)
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        if os.environ.get("KVS_PEER_REEXEC"):
            sys.exit(f"peer: running under {sys.executable}, not the reference Python {VENV}/bin/python")
        os.environ["KVS_PEER_REEXEC"] = "1"
        py = os.path.join(VENV, "bin", "python")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(py, [py] + sys.argv)
    import llama_cpp as lib
    if lib.__version__ != VERSION:
        sys.exit(f"peer: llama_cpp {lib.__version__} imported from {lib.__file__}, want {VERSION}")
    return lib
