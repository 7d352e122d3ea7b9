"""The firmware target: a bootable UEFI disk image with A/B root slots (``make firmware``).

Each slot is a read-only squashfs holding the gateway binary and the few libraries it needs;
the EFI system partition holds systemd-boot, the kernel and an initramfs; the ``edge-data``
partition holds the database, keys, configs and logs. This package is what the image adds to
the gateway binary: ``boot`` (the image's main service), ``loader`` (systemd-boot's entries
and boot counting), ``seed`` (first-boot provisioning) and ``commands``. The recipe is in
``firmware/``; docs/firmware.md explains the layout, boot counting, updates and seeds.
"""
