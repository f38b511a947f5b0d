"""`cmake --install` of the build that QWEN_BIN_DIR belongs to, into a temporary prefix, then
examples/embed built against the installed package in the two ways a user would (find_package(qwen)
and pkg-config) and run on a tiny model with the real Qwen vocabulary.

Checks: the install tree holds the binaries, libqwen.a, the public header and no internal one, the
CMake package and qwen.pc; both example builds print the prompt's token ids equal to HF tokenizers'
ids, a round trip "ok", and the same greedy completion as qwen-cli on the same model (exact text
equality: both run the same engine on the same backend mode)."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from tokenizers import Tokenizer

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_model import make_model  # noqa: E402

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def prefix(bin_dir, tmp_path_factory):
    build_dir = bin_dir.parent
    if not (build_dir / "CMakeCache.txt").is_file():
        pytest.fail(f"{build_dir} is not a CMake build directory (QWEN_BIN_DIR must be <build>/bin)")
    out = tmp_path_factory.mktemp("install") / "prefix"
    subprocess.run(["cmake", "--install", str(build_dir), "--prefix", str(out)], check=True, capture_output=True,
                   timeout=300)
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory, tokenizer_dir):
    path = tmp_path_factory.mktemp("embed") / "tiny-vocab.gguf"
    make_model(path, arch="qwen2", n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=151936,
               type="Q8_0", seed=5, vocab=str(tokenizer_dir / "tokenizer.json"),
               vocab_config=str(tokenizer_dir / "tokenizer_config.json"))
    return path


def libdir(prefix):
    (lib,) = [p.parent for p in prefix.glob("lib*/**/libqwen.a")]
    return lib


def test_install_tree(prefix):
    for tool in ("qwen-cli", "qwen-bench", "qwen-gguf", "qwen-tokenize", "qwen-logits"):
        assert (prefix / "bin" / tool).is_file(), tool
    assert (prefix / "include" / "qwen" / "qwen.h").is_file()
    headers = sorted(p.relative_to(prefix / "include").as_posix() for p in (prefix / "include").rglob("*.h"))
    assert headers == ["qwen/qwen.h"], headers  # internal headers stay private
    cmake_dir = libdir(prefix) / "cmake" / "qwen"
    for f in ("qwenConfig.cmake", "qwenConfigVersion.cmake", "qwenTargets.cmake"):
        assert (cmake_dir / f).is_file(), f
    pc = (libdir(prefix) / "pkgconfig" / "qwen.pc").read_text()
    assert "-lqwen" in pc and "prefix=${pcfiledir}/" in pc


def expected_completion(bin_dir, model):
    # -no-cnv: the example completes the plain prompt; qwen-cli would chat through the template.
    proc = subprocess.run([str(bin_dir / "qwen-cli"), "--device", "cpu", "-m", str(model), "-no-cnv", "-p", PROMPT,
                           "-n", "12", "--temp", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def check_example(exe, model, tokenizer_json, want_text):
    proc = subprocess.run([str(exe), str(model), PROMPT, "12"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n", 2)
    want_ids = Tokenizer.from_file(str(tokenizer_json)).encode(PROMPT).ids
    assert lines[0] == "tokens: " + " ".join(map(str, want_ids))
    assert lines[1] == "round trip: ok"
    assert lines[2] == want_text + "\n", (lines[2], want_text)
    assert "finish: length" in proc.stderr and "fast" in proc.stderr, proc.stderr


def test_find_package_example(prefix, model, bin_dir, tokenizer_json, tmp_path):
    """examples/embed configured with CMAKE_PREFIX_PATH=<prefix>: find_package(qwen) -> qwen::qwen."""
    build = tmp_path / "build"
    cmd = ["cmake", "-S", str(ROOT / "examples" / "embed"), "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}",
           "-DCMAKE_BUILD_TYPE=Release"]
    if shutil.which("ninja"):
        cmd += ["-G", "Ninja"]
    if shutil.which("ccache"):
        cmd += ["-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True, timeout=300)
    check_example(build / "qwen-embed-example", model, tokenizer_json, expected_completion(bin_dir, model))


@pytest.fixture(scope="module")
def pkg_config_example(prefix, tmp_path_factory):
    """examples/embed/main.cpp compiled by hand with `pkg-config --cflags --libs qwen`."""
    if shutil.which("pkg-config") is None:
        pytest.fail("pkg-config is not installed (apt-get install pkg-config)")
    env = dict(os.environ, PKG_CONFIG_PATH=str(libdir(prefix) / "pkgconfig"))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "qwen"], check=True, capture_output=True, text=True,
                           env=env).stdout.split()
    exe = tmp_path_factory.mktemp("pkg") / "qwen-embed-example"
    cxx = [os.environ.get("CXX", "c++")]
    if shutil.which("ccache"):
        cxx = ["ccache", *cxx]
    subprocess.run([*cxx, "-std=c++17", "-O1", str(ROOT / "examples" / "embed" / "main.cpp"), "-o", str(exe),
                    *flags], check=True, capture_output=True, timeout=300)
    return exe


def test_pkg_config_example(pkg_config_example, model, bin_dir, tokenizer_json):
    check_example(pkg_config_example, model, tokenizer_json, expected_completion(bin_dir, model))


def test_example_reports_a_bad_model_path(pkg_config_example, tmp_path):
    """A missing model file is a clear error naming the file, exit status 1."""
    missing = tmp_path / "no-such-model.gguf"
    proc = subprocess.run([str(pkg_config_example), str(missing)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and str(missing) in proc.stderr, proc.stderr
