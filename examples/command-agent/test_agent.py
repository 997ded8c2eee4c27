"""The example agent's own tests (stdlib unittest): the plan's `verify` runs them with the tests the tasks add."""

import tempfile
import unittest
from pathlib import Path

from agent import apply, directives


class DirectivesTest(unittest.TestCase):
    def test_only_directive_lines_count(self) -> None:
        prompt = "Add a greeting.\nwrite hello.py: print('hi')\n> write quoted.py: no\nappend hello.py:\n"
        prompt += "append hello.py:     x = 1\n"
        self.assertEqual(directives(prompt), [("write", "hello.py", "print('hi')"), ("append", "hello.py", ""),
                                              ("append", "hello.py", "    x = 1")])

    def test_write_then_append(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            apply(root, "write", "pkg/a.txt", "one")
            apply(root, "append", "pkg/a.txt", "two")
            self.assertEqual((root / "pkg" / "a.txt").read_text(), "one\ntwo\n")

    def test_no_path_outside_the_worktree(self) -> None:
        with tempfile.TemporaryDirectory() as tmp, self.assertRaises(ValueError):
            apply(Path(tmp), "write", "../escape.txt", "no")


if __name__ == "__main__":
    unittest.main()
