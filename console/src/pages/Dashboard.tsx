// 工作台: the day's orders by channel and hour, paid → shipped funnel, holds by code, on-time shipping; polled live.
import { useMemo, useState } from 'react';
import { Card, Col, DatePicker, Row, Space, Statistic, Typography } from 'antd';
import dayjs from 'dayjs';
import { api } from '../api';
import { useApi } from '../hooks';
import { useI18n } from '../i18n';
import { percent, time, today, yuan } from '../format';
import { Chart } from '../components/Chart';
import { EmptyState, ErrorState } from '../components/ErrorState';

interface Dashboard {
  day: string;
  generated_at: string;
  channels: string[];
  heatmap: [number, number, number][];
  funnel: { stage: string; count: number }[];
  exceptions: { code: string; count: number }[];
  on_time_ship_rate: number | null;
  totals: { orders: number; amount_fen: number; cancelled: number };
}

const POLL_MS = 5000;

export default function DashboardPage() {
  const { t, label } = useI18n();
  const [day, setDay] = useState(today());
  const { data, error, reload } = useApi((signal) => api<Dashboard>('/dashboard', { query: { day }, signal }), [day], POLL_MS);

  const heatmap = useMemo(() => {
    if (!data) return null;
    const max = Math.max(1, ...data.heatmap.map((c) => c[2]));
    return {
      tooltip: { position: 'top', formatter: (p: any) => `${label('channel', data.channels[p.value[1]])} ${p.value[0]}:00 — ${p.value[2]}` },
      grid: { left: 100, right: 80, top: 10, bottom: 30 },
      xAxis: { type: 'category', data: Array.from({ length: 24 }, (_, h) => `${h}`), splitArea: { show: true } },
      yAxis: { type: 'category', data: data.channels.map((c) => label('channel', c)), splitArea: { show: true } },
      visualMap: { min: 0, max, calculable: true, orient: 'vertical', right: 0, top: 'middle', itemHeight: 120 },
      series: [{ type: 'heatmap', data: data.heatmap.map(([c, h, n]) => [h, c, n]), label: { show: false } }],
    };
  }, [data, label]);

  const funnel = useMemo(() => data && ({
    tooltip: { trigger: 'item', formatter: (p: any) => `${p.name}: ${p.value}` },
    series: [{
      type: 'funnel', sort: 'none', left: '10%', width: '80%', minSize: '20%', gap: 2,
      label: { show: true, position: 'inside', formatter: (p: any) => `${p.name} ${p.value}` },
      data: data.funnel.map((f) => ({ name: label('stage', f.stage), value: f.count })),
    }],
  }), [data, label]);

  const exceptions = useMemo(() => data && ({
    tooltip: { trigger: 'axis' },
    grid: { left: 110, right: 30, top: 10, bottom: 20 },
    xAxis: { type: 'value', minInterval: 1 },
    yAxis: { type: 'category', data: data.exceptions.map((e) => label('hold', e.code)) },
    series: [{ type: 'bar', data: data.exceptions.map((e) => e.count), itemStyle: { color: '#fa8c16' } }],
  }), [data, label]);

  if (error && !data) return <ErrorState error={error} onRetry={reload} />;
  return (
    <Space direction="vertical" size="large" style={{ width: '100%' }}>
      <div style={{ display: 'flex', justifyContent: 'space-between', alignItems: 'center' }}>
        <Typography.Title level={4} style={{ margin: 0 }}>{t('nav.dashboard')}</Typography.Title>
        <Space>
          <Typography.Text type="secondary" data-testid="dashboard-updated">
            {data ? t('dashboard.updated', { at: time(data.generated_at) }) : t('state.loading')}
          </Typography.Text>
          <DatePicker allowClear={false} value={dayjs(day)} onChange={(d) => d && setDay(d.format('YYYY-MM-DD'))} />
        </Space>
      </div>
      <Row gutter={16}>
        <Col span={6}><Card><Statistic title={t('dashboard.orders')} value={data?.totals.orders ?? '—'} /></Card></Col>
        <Col span={6}><Card><Statistic title={t('dashboard.amount')} value={data ? yuan(data.totals.amount_fen) : '—'} /></Card></Col>
        <Col span={6}><Card><Statistic title={t('dashboard.cancelled')} value={data?.totals.cancelled ?? '—'} /></Card></Col>
        <Col span={6}><Card><Statistic title={t('dashboard.onTime')} value={percent(data?.on_time_ship_rate)} /></Card></Col>
      </Row>
      <Card title={t('dashboard.heatmap')}>
        {data && data.channels.length === 0 ? <EmptyState text={t('dashboard.noOrders')} /> : heatmap && <Chart option={heatmap} height={Math.max(220, 50 + 30 * (data?.channels.length ?? 0))} testId="heatmap" />}
      </Card>
      <Row gutter={16}>
        <Col span={12}>
          <Card title={t('dashboard.funnel')}>{funnel && <Chart option={funnel} testId="funnel" />}</Card>
        </Col>
        <Col span={12}>
          <Card title={t('dashboard.exceptions')}>
            {data && data.exceptions.length === 0 ? <EmptyState text={t('dashboard.noExceptions')} /> : exceptions && <Chart option={exceptions} testId="exceptions-chart" />}
          </Card>
        </Col>
      </Row>
    </Space>
  );
}
