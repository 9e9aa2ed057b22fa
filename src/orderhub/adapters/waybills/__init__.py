"""Electronic waybills (电子面单): a waybill number and print data for a package, from 菜鸟 or a carrier."""
