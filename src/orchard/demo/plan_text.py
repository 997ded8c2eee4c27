"""The demo plan (YAML). `{PYTHON}` and `{AGENT}` are filled in with absolute paths when it is written."""

DEMO_PLAN = r"""
# orchard demo plan: six tasks, three at a time; `api` and `cli` need `models`; `tests` needs both.
parallel: 3
defaults: {agent: demo, retries: 1, timeout: 2m}
agents:
  demo:
    type: command
    command: ["{PYTHON}", "{AGENT}", "{prompt_file}"]
tasks:
  - id: models
    estimate: 3s
    files: [shop/models.py]
    prompt: |
      Add the order model.
      @say Reading the repository
      @sleep 1.5
      @say Writing shop/models.py
      @write shop/models.py
      from dataclasses import dataclass


      @dataclass
      class Order:
          id: int
          item: str
          quantity: int = 1
      @end
      @sleep 1
  - id: api
    depends_on: [models]
    estimate: 3s
    prompt: |
      Add a function that totals an order.
      @say Planning the API
      @sleep 1
      @write shop/api.py
      from shop.models import Order

      PRICES = {"apple": 3, "pear": 4}


      def total(order: Order) -> int:
          return PRICES[order.item] * order.quantity
      @end
      @sleep 1.5
  - id: cli
    depends_on: [models]
    estimate: 2s
    prompt: |
      Add a command-line entry point.
      @sleep 1
      @write shop/__main__.py
      from shop.models import Order

      print(Order(1, "apple"))
      @end
      @sleep 1
  - id: tests
    depends_on: [api, cli]
    estimate: 3s
    verify: ["{PYTHON}", "-m", "unittest", "discover", "-s", "tests", "-t", "."]
    prompt: |
      Write tests for the total. (The first attempt has a bug; orchard's verify feedback makes the agent fix it.)
      @say Writing tests
      @sleep 1
      @write tests/__init__.py
      @end
      @write tests/test_total.py
      import unittest

      from shop.api import total
      from shop.models import Order


      class TotalTest(unittest.TestCase):
          def test_total(self) -> None:
              self.assertEqual(total(Order(1, "apple", 2)), 7)
      @end
      @fix-on-feedback tests/test_total.py
      import unittest

      from shop.api import total
      from shop.models import Order


      class TotalTest(unittest.TestCase):
          def test_total(self) -> None:
              self.assertEqual(total(Order(1, "apple", 2)), 6)
      @end
  - id: docs
    estimate: 4s
    prompt: |
      Document the package.
      @say Drafting docs
      @sleep 2
      @append README.md The shop has orders (shop/models.py) and totals (shop/api.py).
      @sleep 1.5
  - id: changelog
    estimate: 2s
    prompt: |
      Start a changelog.
      @sleep 1.5
      @write CHANGELOG.md
      # Changelog

      - Orders, totals, a CLI and tests, written by orchard's demo agents.
      @end
"""
