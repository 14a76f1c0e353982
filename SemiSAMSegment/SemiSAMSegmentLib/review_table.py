"""The case's review order ("Next uncertain slice") on the segmentation node, saved with the scene.

The order (:class:`semisam.review.ReviewOrder`: the specialist's ranking after *Auto-segment*, the
generalist's confidence first for the slices a *Propagate* answered) is kept twice: as a
``vtkMRMLTableNode`` (rank, slice k, uncertainty, source) referenced from the segmentation node, which the
user can look at and which is saved with the scene, and as the segmentation node attribute
:data:`REVIEW_ATTRIBUTE` (comma-separated ``k``, most uncertain first) that :func:`review_order` reads
back. No qt, no ``slicer.app``.
"""

from __future__ import annotations

import vtk

from semisam.review import SPECIALIST, ReviewOrder

#: Segmentation-node attribute: slice indices ``k`` of the input volume, most uncertain first.
REVIEW_ATTRIBUTE = "SemiSAM.ReviewOrder"
#: Node-reference role from the segmentation node to its review table.
REVIEW_TABLE_ROLE = "SemiSAM.ReviewTable"


def write_review_table(segmentation_node, order: ReviewOrder):
    """Store ``order`` in a table node referenced by ``segmentation_node`` (created or reused) and in its
    :data:`REVIEW_ATTRIBUTE`; returns the table node."""
    scene = segmentation_node.GetScene()
    table = segmentation_node.GetNodeReference(REVIEW_TABLE_ROLE)
    if table is None:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{segmentation_node.GetName()} review order")
        segmentation_node.SetNodeReferenceID(REVIEW_TABLE_ROLE, table.GetID())
    vtable = vtk.vtkTable()
    columns = (
        ("rank", vtk.vtkIntArray(), range(1, len(order) + 1)),
        ("slice", vtk.vtkIntArray(), order.slices),
        ("uncertainty", vtk.vtkDoubleArray(), order.uncertainty),
        ("source", vtk.vtkStringArray(), order.source),
    )
    for name, array, values in columns:
        array.SetName(name)
        for v in values:
            array.InsertNextValue(v)
        vtable.AddColumn(array)
    table.SetAndObserveTable(vtable)
    segmentation_node.SetAttribute(REVIEW_ATTRIBUTE, ",".join(str(int(k)) for k in order.slices))
    return table


def review_order(segmentation_node) -> list[int]:
    """The slices stored by :func:`write_review_table` (empty when there is none)."""
    text = segmentation_node.GetAttribute(REVIEW_ATTRIBUTE) if segmentation_node is not None else None
    return [int(v) for v in text.split(",") if v.strip()] if text else []


def read_review(segmentation_node) -> ReviewOrder:
    """The whole order (uncertainty and source too) stored by :func:`write_review_table`; an empty one
    when there is none. A table that no longer matches the attribute (edited by hand) gives the
    attribute's slices with unknown uncertainty."""
    slices = review_order(segmentation_node)
    table = segmentation_node.GetNodeReference(REVIEW_TABLE_ROLE) if segmentation_node is not None else None
    vtable = table.GetTable() if table is not None else None
    if vtable is not None and vtable.GetNumberOfRows() == len(slices):
        col = {vtable.GetColumnName(c): vtable.GetColumn(c) for c in range(vtable.GetNumberOfColumns())}
        if {"slice", "uncertainty", "source"} <= set(col):
            stored = [int(col["slice"].GetValue(r)) for r in range(len(slices))]
            if stored == slices:
                return ReviewOrder(
                    slices,
                    [float(col["uncertainty"].GetValue(r)) for r in range(len(slices))],
                    [str(col["source"].GetValue(r)) for r in range(len(slices))],
                )
    return ReviewOrder(slices, [float("nan")] * len(slices), [SPECIALIST] * len(slices))
