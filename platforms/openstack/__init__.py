"""The ``openstack`` platform: a share of a cloud booked per host aggregate or availability
zone, each session one Nova server (see ``platform``), built by pure functions (``builders``)
from pools read out of Placement (``cluster``), through the official openstacksdk (``client``).
The ``virtual-machine`` executable kind is in ``kinds``. Nothing is imported here, so that
loading the kind plugin does not load openstacksdk."""
