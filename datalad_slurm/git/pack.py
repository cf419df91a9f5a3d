"""The pack format: objects encoded and compressed, deltas, a pack file and its index, and
installing them where git finds them.

``git fast-import`` writes every folder a commit changes in full; :mod:`datalad_slurm.git.trees`
writes a changed folder as a delta against its previous version instead, into a pack built
here ("copy the bytes before, insert the new entries, copy the bytes after"). The pack's index
is ours too (see :func:`install_pack`). :func:`write_blobs` packs small blobs the same way (the
symlinks of annexed files, which ``git update-index`` would write as one loose object each).
SHA-1 repositories only (:func:`uses_sha1`; callers fall back to git's own writers otherwise).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterable

from datalad_slurm.git.runner import git_bytes, run_git

#: what the names of our packs start with while they are written (a killed writer's are
#: removed by :func:`datalad_slurm.jobs.statedir.clear_interrupted_writes`)
TMP_PACK_PREFIX = "tmp_datalad_slurm_"
#: zlib level for what we write; ``git gc`` recompresses at git's own level later
COMPRESSION = 1

#: object types as a pack numbers them
COMMIT, TREE, BLOB, OFS_DELTA = 1, 2, 3, 6


def _varint(number: int) -> bytes:
    """A delta's size field: seven bits at a time, lowest first."""
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _copy(offset: int, size: int) -> bytes:
    """Delta instructions copying ``size`` bytes from ``offset`` of the base."""
    out = bytearray()
    while size:
        step = min(size, 0x10000)
        op = 0x80
        args = bytearray()
        for shift in range(4):
            byte = (offset >> (8 * shift)) & 0xFF
            if byte:
                op |= 1 << shift
                args.append(byte)
        if step != 0x10000:  # a size of zero means 0x10000
            for shift in range(3):
                byte = (step >> (8 * shift)) & 0xFF
                if byte:
                    op |= 1 << (4 + shift)
                    args.append(byte)
        out.append(op)
        out += args
        offset += step
        size -= step
    return bytes(out)


def _insert(data: bytes) -> bytes:
    out = bytearray()
    for start in range(0, len(data), 127):
        piece = data[start : start + 127]
        out.append(len(piece))
        out += piece
    return bytes(out)


def make_delta(base_size: int, new: bytes, head: int, tail: int) -> bytes:
    """The delta turning a base into ``new`` when both share ``head`` leading and ``tail``
    trailing bytes."""
    middle_end = len(new) - tail
    return b"".join(
        [
            _varint(base_size),
            _varint(len(new)),
            _copy(0, head),
            _insert(new[head:middle_end]),
            _copy(base_size - tail, tail),
        ]
    )


def object_sha(kind: bytes, data: bytes) -> bytes:
    digest = hashlib.sha1(b"%s %d\0" % (kind, len(data)))
    digest.update(data)
    return digest.digest()


class PackBuilder:
    """Objects appended to a pack in memory; ``finish`` adds header and checksum."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.offset = 12  # after the header
        #: (sha, offset, CRC-32 of the packed bytes) of every object, for the pack's index
        self.objects: list[tuple[bytes, int, int]] = []

    @staticmethod
    def _header(kind: int, size: int) -> bytearray:
        out = bytearray([(kind << 4) | (size & 0x0F)])
        size >>= 4
        while size:
            out[-1] |= 0x80
            out.append(size & 0x7F)
            size >>= 7
        return out

    def add(self, kind: int, data: bytes, sha: bytes) -> int:
        """Append a whole object; returns its offset."""
        return self._append(self._header(kind, len(data)), data, sha)

    def add_delta(self, base_offset: int, delta: bytes, sha: bytes) -> int:
        """Append a delta against the object at ``base_offset``; returns its offset."""
        header = self._header(OFS_DELTA, len(delta))
        distance = self.offset - base_offset
        encoded = bytearray([distance & 0x7F])
        distance >>= 7
        while distance:
            distance -= 1
            encoded.insert(0, 0x80 | (distance & 0x7F))
            distance >>= 7
        return self._append(header + encoded, delta, sha)

    def _append(self, header: bytes | bytearray, data: bytes, sha: bytes) -> int:
        at = self.offset
        compressed = zlib.compress(data, COMPRESSION)
        self.parts += [bytes(header), compressed]
        self.offset += len(header) + len(compressed)
        self.objects.append((sha, at, zlib.crc32(compressed, zlib.crc32(header))))
        return at

    def finish(self) -> bytes:
        count = len(self.objects).to_bytes(4, "big")
        body = b"".join([b"PACK", (2).to_bytes(4, "big"), count, *self.parts])
        return body + hashlib.sha1(body).digest()

    def index(self, pack_checksum: bytes) -> bytes:
        """The pack's index (version 2), what ``git index-pack`` would write for it."""
        ordered = sorted(self.objects)
        fanout = [0] * 256
        for sha, _, _ in ordered:
            fanout[sha[0]] += 1
        total = 0
        counts = []
        for count in fanout:
            total += count
            counts.append(total.to_bytes(4, "big"))
        small: list[bytes] = []
        large: list[bytes] = []
        for _, offset, _ in ordered:
            if offset < 0x80000000:
                small.append(offset.to_bytes(4, "big"))
            else:
                small.append((0x80000000 | len(large)).to_bytes(4, "big"))
                large.append(offset.to_bytes(8, "big"))
        body = b"".join(
            [
                b"\xfftOc",
                (2).to_bytes(4, "big"),
                *counts,
                *(sha for sha, _, _ in ordered),
                *(crc.to_bytes(4, "big") for _, _, crc in ordered),
                *small,
                *large,
                pack_checksum,
            ]
        )
        return body + hashlib.sha1(body).digest()


def install_pack(repo: str, pack: PackBuilder) -> None:
    """Put the pack and its index where git finds them, as ``git index-pack`` does.

    Index-pack would inflate and hash every object again (with git's collision-detecting
    SHA-1, about half of the cost of writing the commits); the objects' shas are ours already.
    With ``core.sharedRepository`` set, index-pack writes them, so that their modes are git's.
    """
    data = pack.finish()
    shared = run_git(repo, "config", "--get", "core.sharedRepository", check=False).strip()
    if shared:
        git_bytes(repo, ["index-pack", "--stdin"], data, what="git index-pack")
        return
    folder = os.path.join(repo, run_git(repo, "rev-parse", "--git-path", "objects/pack").strip())
    name = os.path.join(folder, f"pack-{data[-20:].hex()}")
    # the pack before its index: git looks for packs by their index
    for suffix, content in ((".pack", data), (".idx", pack.index(data[-20:]))):
        handle, temporary = tempfile.mkstemp(prefix=TMP_PACK_PREFIX, dir=folder)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(content)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, 0o444)
            os.rename(temporary, name + suffix)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise


def uses_sha1(repo: str) -> bool:
    """Whether the repository's objects are named by SHA-1 (what this module writes)."""
    return run_git(repo, "rev-parse", "--show-object-format", check=False).strip() == "sha1"


def write_blobs(repo: str, contents: Iterable[bytes]) -> None:
    """Write blobs (small ones: symlink targets) into the repository as one pack.

    ``git update-index --add`` would write each as a loose object: 30,000 files for 10,000
    jobs' annexed outputs, seconds to write, and enough to make git's next auto maintenance
    repack the repository.
    """
    pack = PackBuilder()
    seen: set[bytes] = set()
    for content in contents:
        sha = object_sha(b"blob", content)
        if sha not in seen:
            seen.add(sha)
            pack.add(BLOB, content, sha)
    if seen:
        install_pack(repo, pack)
