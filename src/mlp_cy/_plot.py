"""The training report of ``mlp-cy train --plot`` and ``mlp-cy plot``: one PNG.

matplotlib is an optional dependency (``pip install '.[plot]'``); it is
imported only when a plot is asked for. The figure is drawn on an Agg canvas
directly, without pyplot, so the caller's matplotlib backend is left alone.
"""

import numpy as np

__all__ = ["MatplotlibMissingError", "check_available", "plot_training"]


class MatplotlibMissingError(ImportError):
    """Raised when a plot is asked for and matplotlib cannot be imported."""


def check_available():
    """Raise MatplotlibMissingError unless matplotlib's Agg backend can be imported.

    Raises
    ------
    MatplotlibMissingError
        With a message that says how to install it.
    """
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as exc:
        raise MatplotlibMissingError(
            "plotting needs matplotlib, which is not installed: "
            "pip install matplotlib (from a clone of mlp_cy: pip install '.[plot]')"
        ) from exc


def plot_training(path, loss_curve, val_accuracy, confusion=None, labels=(), *,
                  val_loss=(), train_accuracy=(), title=""):
    """Write a PNG with the loss curves, the accuracy curves and a confusion matrix.

    Parameters
    ----------
    path : str or os.PathLike
        The PNG file to write.
    loss_curve : sequence of float
        Mean training loss of each epoch.
    val_accuracy : sequence of float
        Held-out accuracy after each epoch; may be empty (no validation split).
    confusion : ndarray of shape (n_labels, n_labels), default=None
        Counts, rows the true labels and columns the predicted ones; None leaves
        the confusion matrix out.
    labels : sequence of str, default=()
        Names of the labels, in the order of the rows of ``confusion``.
    val_loss : sequence of float, default=()
        Mean cross-entropy on the held-out rows after each epoch; may be empty.
    train_accuracy : sequence of float, default=()
        Accuracy on (a sample of) the training rows after each epoch; may be empty.
    title : str, default=""
        Title of the figure.
    """
    check_available()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with_confusion = confusion is not None
    fig = Figure(figsize=(16 if with_confusion else 11, 5), layout="constrained")
    FigureCanvasAgg(fig)
    widths = [1, 1, 1.35] if with_confusion else [1, 1]
    axes = fig.subplots(1, len(widths), gridspec_kw={"width_ratios": widths})
    ax_loss, ax_acc = axes[:2]
    epochs = np.arange(1, len(loss_curve) + 1)
    ax_loss.plot(epochs, loss_curve, marker="o", color="tab:blue", label="training")
    if len(val_loss):
        ax_loss.plot(np.arange(1, len(val_loss) + 1), val_loss, marker="o",
                     color="tab:orange", label="held-out")
        ax_loss.legend()
    ax_loss.set(xlabel="epoch", ylabel="mean cross-entropy", title="Loss")
    ax_loss.grid(alpha=0.3)

    if len(train_accuracy):
        ax_acc.plot(np.arange(1, len(train_accuracy) + 1), train_accuracy,
                    marker="o", color="tab:blue", label="training")
    if len(val_accuracy):
        ax_acc.plot(np.arange(1, len(val_accuracy) + 1), val_accuracy,
                    marker="o", color="tab:green", label="held-out")
    elif not len(train_accuracy):
        ax_acc.text(0.5, 0.5, "no held-out split\n(--val-fraction 0)",
                    ha="center", va="center", transform=ax_acc.transAxes)
    if len(train_accuracy) and len(val_accuracy):
        ax_acc.legend()
    ax_acc.set(xlabel="epoch", ylabel="accuracy",
               title="Accuracy" if len(train_accuracy) else "Held-out accuracy")
    ax_acc.grid(alpha=0.3)
    for ax in (ax_loss, ax_acc):
        # Integer epochs only: a 1-epoch run should not show ticks at 0.5.
        ax.xaxis.get_major_locator().set_params(integer=True)

    if with_confusion:
        _plot_confusion(fig, axes[2], np.asarray(confusion), labels)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)


def _plot_confusion(fig, ax_cm, confusion, labels):
    image = ax_cm.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax_cm, shrink=0.8, label="test images")
    ticks = np.arange(len(labels))
    ax_cm.set_xticks(ticks, labels, rotation=45, ha="right", fontsize=8)
    ax_cm.set_yticks(ticks, labels, fontsize=8)
    ax_cm.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
    threshold = confusion.max() / 2 if confusion.size else 0
    if len(labels) <= 20:  # counts stay legible up to about 20 x 20 cells
        for (i, j), count in np.ndenumerate(confusion):
            ax_cm.text(j, i, str(count), ha="center", va="center", fontsize=7,
                       color="white" if count > threshold else "black")
