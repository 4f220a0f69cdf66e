"""``graft`` command line: a thin layer over the library.

One module per command group; each exposes a plain function that typer wraps.
Library errors become one clean line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import sys

import typer

from . import backbones as _backbones
from . import demo as _demo
from . import evaluate as _evaluate
from . import explain as _explain
from . import export as _export
from . import predict as _predict
from . import report as _report
from . import serve as _serve
from . import train as _train

app = typer.Typer(
    name="graft",
    help="Turn a folder of labelled images into an accurate image classifier, by transfer learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("train")(_train.train)
app.command("evaluate")(_evaluate.evaluate)
app.command("predict")(_predict.predict)
app.command("backbones")(_backbones.backbones)
app.command("demo")(_demo.demo)
app.command("report")(_report.report)
app.command("explain")(_explain.explain)
app.command("features")(_explain.features)
app.command("dream")(_explain.dream)
app.command("attack")(_explain.attack)
app.command("export")(_export.export)
app.command("serve")(_serve.serve)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``graft`` console script."""
    import click

    from ..exceptions import GraftError
    from ._common import err_console

    try:
        rv = app(args=argv, standalone_mode=False)
    except GraftError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(e.exit_code)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted (fine-tuning checkpoints, if any, are kept; use --resume RUN_DIR)")
        sys.exit(130)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        # Parameter validation in the library raises plain ValueError with a full message.
        err_console.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
